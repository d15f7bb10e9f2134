//! One benchmark result row as `memchan-bench` writes it (`bench/src/main.rs`, `Row`): what
//! the tables, charts and targets share.

use serde_json::Value;

/// What a transport is to the comparison (`Row::role`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Role {
    /// One of memchan's paths.
    Memchan,
    /// What users would pick instead (pipe, FIFO, seqpacket, POSIX mq, shm ring, iceoryx2).
    Peer,
    /// Shared memory with a spinning reader: the least any transport can cost.
    Floor,
}

/// The row's role. Rows written before rows carried one (bench/results/ of 2026-12-01 and
/// earlier) are told apart by their transport names, once, here.
pub fn role(row: &Value) -> Role {
    let name = row["transport"].as_str().unwrap_or("");
    match row["role"].as_str() {
        Some("memchan") => Role::Memchan,
        Some("floor") => Role::Floor,
        Some(_) => Role::Peer,
        None if name.starts_with("memchan") => Role::Memchan,
        None if name.contains("floor") => Role::Floor,
        None => Role::Peer,
    }
}

/// Whether the row's receiver spins instead of sleeping (memchan's busy-polling mapped paths,
/// a busy-waiting peer such as iceoryx2's, the floor): compared with each other, not with
/// transports whose receivers sleep. Rows written before rows carried `busy` (bench/results/
/// of 2026-12-03 and earlier) are told apart by their path or name.
pub fn busy_polls(row: &Value) -> bool {
    if let Some(busy) = row["busy"].as_bool() {
        return busy;
    }
    match row["path"].as_str() {
        Some(path) if role(row) == Role::Memchan => {
            path == "mmap-busy" || path == "producer-mmap-busy"
        }
        _ => {
            role(row) == Role::Floor
                || row["transport"]
                    .as_str()
                    .is_some_and(|n| n.contains("(busy)"))
        }
    }
}

/// The median of `v` (the upper one of an even count; 0 for none).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The repetitions of a row.
pub fn values(row: &Value) -> Vec<f64> {
    row["values"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Median, min and max of a row's repetitions.
pub fn stats(row: &Value) -> (f64, f64, f64) {
    let v = values(row);
    let lo = v.iter().copied().reduce(f64::min).unwrap_or(0.0);
    let hi = v.iter().copied().reduce(f64::max).unwrap_or(0.0);
    (median(&v), lo, hi)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn roles_from_new_and_legacy_rows() {
        let new =
            json!({"transport": "memchan mmap (busy)", "role": "memchan", "path": "mmap-busy"});
        assert_eq!(role(&new), Role::Memchan);
        assert!(busy_polls(&new));
        let legacy = json!({"transport": "memchan mmap (busy)"});
        assert!(busy_polls(&legacy));
        let peer =
            json!({"transport": "iceoryx2 (busy)", "role": "peer", "path": "", "busy": true});
        assert!(busy_polls(&peer) && role(&peer) == Role::Peer);
        assert!(!busy_polls(
            &json!({"transport": "iceoryx2 events", "role": "peer", "busy": false})
        ));
        assert_eq!(
            role(&json!({"transport": "spin on shm (floor)"})),
            Role::Floor
        );
        assert_eq!(
            role(&json!({"transport": "pipe", "role": "peer", "path": ""})),
            Role::Peer
        );
        assert_eq!(stats(&json!({"values": [3.0, 1.0, 2.0]})), (2.0, 1.0, 3.0));
    }
}
