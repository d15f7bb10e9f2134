//! Keeps `include/memchan.h` in sync with the Rust ABI: compiles a C program that prints every
//! constant, struct size and field offset of the header, and compares with the Rust values.

use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::process::Command;

use memchan_abi::*;

/// `(C expression, Rust value)` pairs: constants, sizes and offsets.
fn expectations() -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = vec![
        ("MEMCHAN_ABI_VERSION".into(), ABI_VERSION.into()),
        ("MEMCHAN_CHANNELS_MAX".into(), CHANNELS_MAX.into()),
        ("MEMCHAN_MSG_MAX".into(), MSG_MAX.into()),
        ("MEMCHAN_RING_KIB_DEFAULT".into(), RING_KIB_DEFAULT.into()),
        ("MEMCHAN_RING_KIB_MIN".into(), RING_KIB_MIN.into()),
        ("MEMCHAN_RING_KIB_MAX".into(), RING_KIB_MAX.into()),
        ("MEMCHAN_MAX_READERS_MAX".into(), MAX_READERS_MAX.into()),
        ("MEMCHAN_NAME_MAX".into(), NAME_MAX as u64),
        ("MEMCHAN_NAMED_MAX".into(), NAMED_MAX.into()),
        ("MEMCHAN_POLICY_BLOCK".into(), POLICY_BLOCK.into()),
        ("MEMCHAN_POLICY_OVERWRITE".into(), POLICY_OVERWRITE.into()),
        ("MEMCHAN_SEEK_OLDEST".into(), SEEK_OLDEST.into()),
        ("MEMCHAN_SEEK_NEWEST".into(), SEEK_NEWEST.into()),
        (
            "MEMCHAN_RECORD_HEADER_SIZE".into(),
            RECORD_HEADER_SIZE.into(),
        ),
        ("MEMCHAN_RECORD_ALIGN".into(), RECORD_ALIGN.into()),
        ("MEMCHAN_RECORD_SIZE(0)".into(), record_size(0)),
        ("MEMCHAN_RECORD_SIZE(1)".into(), record_size(1)),
        ("MEMCHAN_RECORD_SIZE(4096)".into(), record_size(4096)),
        ("MEMCHAN_RING_MAGIC".into(), RING_MAGIC.into()),
        ("MEMCHAN_READER_SUBSCRIBER".into(), READER_SUBSCRIBER.into()),
        (
            "MEMCHAN_READER_RECORD_MODE".into(),
            READER_RECORD_MODE.into(),
        ),
        ("MEMCHAN_READER_OVERRUN".into(), READER_OVERRUN.into()),
        ("MEMCHAN_RECORD_MODE_OFF".into(), RECORD_MODE_OFF.into()),
        ("MEMCHAN_RECORD_MODE_ON".into(), RECORD_MODE_ON.into()),
        ("MEMCHAN_RECORD_MODE_BATCH".into(), RECORD_MODE_BATCH.into()),
        ("MEMCHAN_IOC_MAGIC".into(), IOC_MAGIC.into()),
        ("MEMCHAN_IOC_INFO".into(), IOC_INFO.into()),
        ("MEMCHAN_IOC_STATS".into(), IOC_STATS.into()),
        ("MEMCHAN_IOC_READER".into(), IOC_READER.into()),
        ("MEMCHAN_IOC_SEEK".into(), IOC_SEEK.into()),
        ("MEMCHAN_IOC_SET_POLICY".into(), IOC_SET_POLICY.into()),
        ("MEMCHAN_IOC_RECORD_MODE".into(), IOC_RECORD_MODE.into()),
        ("MEMCHAN_IOC_CONSUME".into(), IOC_CONSUME.into()),
        ("MEMCHAN_IOC_SEND_BATCH".into(), IOC_SEND_BATCH.into()),
        ("MEMCHAN_SEND_BATCH_MAX".into(), SEND_BATCH_MAX.into()),
        ("MEMCHAN_IOC_PRODUCER".into(), IOC_PRODUCER.into()),
        ("MEMCHAN_IOC_DOORBELL".into(), IOC_DOORBELL.into()),
        ("MEMCHAN_CTL_PRODUCER".into(), CTL_PRODUCER.into()),
        (
            "MEMCHAN_CTL_PRODUCER_FAULT".into(),
            CTL_PRODUCER_FAULT.into(),
        ),
        ("MEMCHAN_CTL_OVERWRITE".into(), CTL_OVERWRITE.into()),
        ("MEMCHAN_MMAP_PRODUCER_OFFSET".into(), MMAP_PRODUCER_OFFSET),
        (
            "sizeof(struct memchan_producer_control)".into(),
            size_of::<ProducerControl>() as u64,
        ),
        (
            "sizeof(struct memchan_send_batch)".into(),
            std::mem::size_of::<SendBatch>() as u64,
        ),
        (
            "sizeof(struct memchan_record_header)".into(),
            size_of::<RecordHeader>() as u64,
        ),
        (
            "sizeof(struct memchan_ring_control)".into(),
            size_of::<RingControl>() as u64,
        ),
        (
            "sizeof(struct memchan_channel_info)".into(),
            size_of::<ChannelInfo>() as u64,
        ),
        (
            "sizeof(struct memchan_channel_stats)".into(),
            size_of::<ChannelStats>() as u64,
        ),
        (
            "sizeof(struct memchan_reader_state)".into(),
            size_of::<ReaderState>() as u64,
        ),
    ];
    macro_rules! offsets {
        ($cname:literal, $ty:ty, $($f:ident),*) => {
            $(v.push((
                format!("offsetof(struct {}, {})", $cname, stringify!($f)),
                offset_of!($ty, $f) as u64,
            ));)*
        };
    }
    offsets!(
        "memchan_record_header",
        RecordHeader,
        seq,
        timestamp_ns,
        len,
        flags
    );
    offsets!(
        "memchan_ring_control",
        RingControl,
        magic,
        abi_version,
        ring_bytes,
        data_offset,
        head_pos,
        head_seq,
        tail_pos,
        tail_seq,
        producer_offset,
        room_pos,
        waiters,
        flags
    );
    offsets!(
        "memchan_producer_control",
        ProducerControl,
        head_pos,
        head_seq,
        tail_pos,
        tail_seq
    );
    offsets!(
        "memchan_channel_info",
        ChannelInfo,
        size,
        abi_version,
        index,
        policy,
        ring_bytes,
        msg_max,
        record_header,
        head_seq,
        oldest_seq,
        subscribers,
        writers,
        mmap_bytes
    );
    offsets!(
        "memchan_channel_stats",
        ChannelStats,
        size,
        reserved,
        messages,
        bytes,
        overruns,
        lost,
        blocked_writes,
        delivered
    );
    offsets!(
        "memchan_reader_state",
        ReaderState,
        size,
        flags,
        cursor_seq,
        cursor_pos,
        lag,
        lost,
        pending_lost
    );
    v
}

#[test]
fn c_header_matches_rust_abi() {
    let exp = expectations();
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"memchan.h\"\nint main(void) {\n",
    );
    for (expr, _) in &exp {
        writeln!(c, "  printf(\"%llu\\n\", (unsigned long long)({expr}));").unwrap();
    }
    c.push_str("  return 0;\n}\n");
    let dir = std::env::temp_dir().join(format!("memchan-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("check.c");
    let exe = dir.join("check");
    std::fs::write(&src, c).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-I", include, "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        cc.status.success(),
        "memchan.h does not compile: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&exe).output().expect("run check");
    let got: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(got.len(), exp.len());
    let mismatches: Vec<String> = exp
        .iter()
        .zip(&got)
        .filter(|((_, rust), c)| rust != *c)
        .map(|((expr, rust), c)| format!("{expr}: C {c}, Rust {rust}"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        mismatches.is_empty(),
        "memchan.h differs from abi.rs:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn record_size_is_aligned_and_covers_header() {
    for len in [0u32, 1, 7, 8, 9, 4095, 4096] {
        let s = record_size(len);
        assert_eq!(s % u64::from(RECORD_ALIGN), 0);
        assert!(s >= u64::from(RECORD_HEADER_SIZE + len));
        assert!(s < u64::from(RECORD_HEADER_SIZE + len + RECORD_ALIGN));
    }
}
