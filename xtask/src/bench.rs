//! `cargo xtask bench`: memchan against its peers in one guest run, reported as ratios.
//!
//! Builds `memchan-bench` and the `memchan` tool (release) and the module, runs the benchmark in a guest of the
//! benchmark kernel (the test kernel without lockdep and debug checks, 2 vCPUs), and writes `bench/results/<date>.json` (raw, every repetition) and
//! `bench/results/<date>.md` (the tables), and copies the tables to `bench/results/latest.md`.
//! Absolute numbers under software emulation mean little; ratios within one run do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::rows::{self, Role};
use crate::{cache, module, run, vm, KernelOpts};

/// `cargo xtask bench`.
pub fn run(opts: &KernelOpts, reps: u32, scale: f64, profile: bool) -> Result<i32> {
    // The `memchan` tool too: the network workload bridges channels with `memchan bridge`.
    run::stage("building memchan-bench and memchan (release)");
    run::checked(
        Command::new("cargo")
            .args([
                "build",
                "--quiet",
                "--release",
                "--package",
                "memchan-bench",
                "--package",
                "memchan-cli",
            ])
            .current_dir(cache::repo()),
    )?;
    let exe = cache::target_dir().join("release/memchan-bench");
    let cli = cache::target_dir().join("release/memchan");
    // The benchmark flavor (no lockdep and friends) unless a tree was given.
    let opts = KernelOpts {
        perf: opts.kdir.is_none() && !opts.debug,
        ..opts.clone()
    };
    let built = module::ensure(&opts)?;
    // The experiment filters (see bench/src/main.rs) travel into the guest explicitly.
    let mut env = format!(
        "MEMCHAN_BENCH_REPS={reps} MEMCHAN_BENCH_SCALE={scale} MEMCHAN_BENCH_CLI={}",
        vm::shell_quote(&cli.to_string_lossy())
    );
    let mut partial = false;
    for var in ["MEMCHAN_BENCH_ONLY", "MEMCHAN_BENCH_TRANSPORTS"] {
        if let Ok(v) = std::env::var(var) {
            partial |= !v.is_empty();
            env.push_str(&format!(" {var}={}", vm::shell_quote(&v)));
        }
    }
    let mut cmd = format!("env {env} {}", vm::shell_quote(&exe.to_string_lossy()));
    if profile {
        cmd = profiled(&cmd)?;
    }
    let out = vm::boot(&built, &cmd, Duration::from_secs(3600))?;
    if out.code != 0 {
        return Ok(out.code);
    }
    let date = run::query(Command::new("date").arg("+%Y-%m-%d"))?;
    let dir = cache::repo().join("bench/results");
    cache::mkdir(&dir)?;
    if profile {
        let text = readable_profile(
            &std::fs::read_to_string(out.scratch.join("profile.txt"))
                .context("perf wrote no profile (see the console log)")?,
        );
        let path = dir.join(format!("{date}-profile.txt"));
        std::fs::write(&path, &text)?;
        println!("{}", text.lines().take(60).collect::<Vec<_>>().join("\n"));
        run::stage(&format!("full profile: {}", path.display()));
        return Ok(0);
    }
    let raw = std::fs::read_to_string(out.scratch.join("bench.json"))
        .context("the benchmark wrote no bench.json")?;
    let _: Value = serde_json::from_str(&raw).context("bench.json is not JSON")?;
    if partial {
        // An experiment: leave the published results alone.
        run::stage(&format!(
            "partial run (MEMCHAN_BENCH_ONLY / MEMCHAN_BENCH_TRANSPORTS set): results above, raw \
             data in {}; bench/results/ untouched",
            out.scratch.join("bench.json").display()
        ));
        return Ok(0);
    }
    let json = dir.join(format!("{date}.json"));
    std::fs::write(&json, &raw)?;
    render(&json)?;
    Ok(0)
}

/// `cmd` (a guest shell command) under `perf record`, system-wide, sampling the `cpu-clock`
/// software event at 1 kHz (TCG emulates no PMU; faster sampling distorts what it measures),
/// followed by `perf report` into `$MEMCHAN_SCRATCH/profile.txt`: the flat profile by symbol.
/// (No call graphs: the benchmark kernel has no frame-pointer or ORC unwinder.)
fn profiled(cmd: &str) -> Result<String> {
    let perf = Path::new("/usr/bin/perf");
    if !perf.exists() {
        crate::setup::apt_install(&["linux-perf"])?;
    }
    if !perf.exists() {
        bail!("no {} after installing linux-perf", perf.display());
    }
    let perf = perf.display();
    // perf cannot write its data file on the 9p scratch directory ("Bad address"); the guest's
    // /tmp is its own.
    let data = "/tmp/memchan-bench-perf.data";
    // The module is reloaded for benchmarking before perf starts, not by the benchmark under
    // it: perf records where modules lie when it starts, and a module loaded later would be
    // an unnamed address range in the profile.
    Ok(format!(
        "env MEMCHAN_BENCH_SETUP=only {cmd} && \
         {perf} record -q -e cpu-clock -F 999 -a -o {data} -- env MEMCHAN_BENCH_SETUP=skip {cmd} && \
         {perf} report -q -i {data} --kallsyms=/proc/kallsyms --stdio --sort sym,dso \
         --percent-limit 0.2 \
         > \"$MEMCHAN_SCRATCH/profile.txt\""
    ))
}

/// `perf report` output made readable: Rust symbols (the module's, which `--kallsyms` resolves
/// as the guest has no copy of `memchan.ko` where perf looks, and the kernel's) demangled
/// without their hashes, and the idle loop, which kallsyms names by the section start it
/// shares an address with, called so.
fn readable_profile(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<String> = line
            .split(' ')
            .map(|w| {
                if w.starts_with("_R") || w.starts_with("_ZN") {
                    format!("{:#}", rustc_demangle::demangle(w))
                } else if w == "__cpuidle_text_start" {
                    "(idle)".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// Writes the tables (`<date>.md`, `latest.md`) and charts (`<date>-*.svg`, `latest-*.svg`)
/// of the raw results in `json` (named `<date>.json`) next to it.
pub fn render(json: &Path) -> Result<()> {
    let raw =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let report: Value = serde_json::from_str(&raw)?;
    let dir = json.parent().unwrap_or(Path::new("."));
    let date = json
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("results")
        .to_string();
    let mut md = markdown(&report, &date)?;
    let charts = crate::charts::draw(&report, &dir.join(&date))?;
    md.push_str("\n## Charts\n\n");
    for chart in &charts {
        let name = chart.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let latest = name.replacen(&date, "latest", 1);
        std::fs::copy(chart, dir.join(&latest))?;
        md.push_str(&format!("![{name}]({name})\n"));
    }
    std::fs::write(dir.join(format!("{date}.md")), &md)?;
    std::fs::write(
        dir.join("latest.md"),
        md.replace(&format!("]({date}-"), "](latest-"),
    )?;
    println!("\n{md}");
    // The summary again, last, where the terminal leaves it in view.
    println!("{}", crate::targets::section(&report)?);
    println!(
        "==> results: {}.{{json,md}}, {} charts",
        dir.join(&date).display(),
        charts.len()
    );
    Ok(())
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// The tables: one per (workload, metric, size/readers), each transport's median with the
/// spread over repetitions, and memchan's best path against the best peer.
fn markdown(r: &Value, date: &str) -> Result<String> {
    let rows = r["rows"].as_array().context("no rows")?;
    if rows.is_empty() {
        bail!("no benchmark rows");
    }
    let mut md = String::new();
    writeln!(
        md,
        "# memchan benchmarks, {date}\n\nGuest kernel {} (the benchmark flavor: the test kernel \
         without lockdep, atomic-sleep checks, list debugging, Rust debug checks and KUnit), {} \
         vCPUs under QEMU software emulation (TCG) on a 2-core host; {} repetitions, median shown with (min-max). Absolute times \
         under emulation are slow and noisy: compare the ratios, which come from one run.\n",
        r["kernel"].as_str().unwrap_or("?"),
        r["cpus"],
        r["repetitions"]
    )?;
    md.push_str(&crate::targets::section(r)?);
    let mut tables: BTreeMap<(String, String, u64, u64), Vec<&Value>> = BTreeMap::new();
    for row in rows {
        let key = (
            row["group"].as_str().unwrap_or("").to_string(),
            row["metric"].as_str().unwrap_or("").to_string(),
            row["size"].as_u64().unwrap_or(0),
            row["readers"].as_u64().unwrap_or(1),
        );
        tables.entry(key).or_default().push(row);
    }
    for ((group, metric, size, readers), rows) in &tables {
        let lower = rows[0]["lower_is_better"].as_bool().unwrap_or(true);
        let title = match group.as_str() {
            "fanout" => format!("fan-out 1 → {readers}, {size} B: {metric}"),
            _ => format!("{group}, {size} B: {metric}"),
        };
        writeln!(
            md,
            "## {title} ({} is better)\n",
            if lower { "lower" } else { "higher" }
        )?;
        writeln!(md, "| transport | median | spread |\n|---|---:|---:|")?;
        // memchan's paths whose receivers sleep are compared with the peers whose receivers
        // sleep; its busy-polling ones with the spin-on-shared-memory floor and with the
        // busy-waiting peers.
        let mut best = BTreeMap::<(Role, bool), (f64, String)>::new();
        for row in rows {
            let name = row["transport"].as_str().unwrap_or("?").to_string();
            let (med, lo, hi) = rows::stats(row);
            writeln!(
                md,
                "| {name} | {} | {}-{} |",
                fmt_num(med),
                fmt_num(lo),
                fmt_num(hi)
            )?;
            let class = (rows::role(row), rows::busy_polls(row));
            let better = best
                .get(&class)
                .is_none_or(|(b, _)| if lower { med < *b } else { med > *b });
            if better {
                best.insert(class, (med, name));
            }
        }
        let better = if lower {
            "below 1 is better"
        } else {
            "above 1 is better"
        };
        let mut ratio = |what: &str, ours: (Role, bool), theirs: (Role, bool)| {
            let (Some((m, mn)), Some((p, pn))) = (best.get(&ours), best.get(&theirs)) else {
                return Ok(());
            };
            if *p <= 0.0 {
                return Ok(());
            }
            writeln!(md, "\n**{what}: {:.2}×** ({mn} vs {pn}; {better})", m / p)
        };
        ratio(
            "busy-polling memchan / floor",
            (Role::Memchan, true),
            (Role::Floor, true),
        )?;
        ratio(
            "busy-polling memchan / best busy-waiting peer",
            (Role::Memchan, true),
            (Role::Peer, true),
        )?;
        ratio(
            "sleeping memchan / best sleeping peer",
            (Role::Memchan, false),
            (Role::Peer, false),
        )?;
        writeln!(md)?;
    }
    writeln!(
        md,
        "## Allocation per message\n\nSlab memory before/after {} messages through memchan: \
         {} KiB → {} KiB.",
        r["slab_messages"], r["slab_kib_before"], r["slab_kib_after"]
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    #[test]
    fn profiles_name_module_functions_and_the_idle_loop() {
        let raw = "    53.68%  [k] __cpuidle_text_start  [kernel.kallsyms]\n     1.17%  [k] \
                   _RNvMs0_NtCsl4QiSrssDVR_7memchan4ringINtB5_4RingNtNtB7_5pages8PageRingE9make_roomB7_  [kernel.kallsyms]\n";
        let text = super::readable_profile(raw);
        assert!(text.contains("53.68%  [k] (idle)"), "{text}");
        assert!(
            text.contains("<memchan::ring::Ring<memchan::pages::PageRing>>::make_room"),
            "{text}"
        );
    }
}
