//! `cargo xtask`: everything needed to build, boot and test memchan on a machine that cannot
//! load kernel modules itself.
//!
//! Verbs: `setup`, `kernel`, `module`, `vm`, `demo`, `stress`, `fuzz`, `bench`, `test`, and
//! `install` (on a Debian machine). Each one does the earlier steps it needs, and each of those
//! is skipped when its result is already in the cache (`~/.cache/memchan`, or
//! `$MEMCHAN_CACHE`).

mod bench;
mod buildroot;
mod cache;
mod charts;
mod debian;
mod demo;
mod install;
mod kernel;
mod logscan;
mod module;
mod qemu;
mod rows;
mod run;
mod setup;
mod targets;
mod test;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// memchan developer tooling.
#[derive(Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

/// Where the kernel tree comes from (shared by every verb that needs a kernel).
#[derive(Args, Clone, Default)]
pub struct KernelOpts {
    /// Use this existing, already built Rust-enabled kernel build tree instead of the cached
    /// test kernel (also read from $KDIR).
    #[arg(long, env = "KDIR")]
    kdir: Option<PathBuf>,
    /// Configure and build the test kernel from this source tree instead of Debian's
    /// linux-source package.
    #[arg(long)]
    src: Option<PathBuf>,
    /// Use the debug flavor of the test kernel: KASAN, UBSAN, kmemleak, lockdep, fault
    /// injection; clang-built in a Debian 13 build root (built and cached separately).
    #[arg(long)]
    debug: bool,
    /// Use the benchmark flavor of the test kernel: without lockdep, KUnit and Rust debug
    /// checks, with perf events for profiling (what `bench` uses; built and cached separately).
    #[arg(long, conflicts_with = "debug")]
    perf: bool,
    /// Use a Debian stock kernel, booted as Debian ships it: the newest trixie-backports
    /// linux-image (7.3; `--debian` alone) or forky's (7.2; `--debian=forky`). The module is
    /// built against Rust metadata rebuilt from the suite's linux-source with its toolchain.
    #[arg(
        long,
        value_enum,
        value_name = "SUITE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "backports",
        conflicts_with_all = ["debug", "perf", "kdir", "src"]
    )]
    debian: Option<debian::Suite>,
}

#[derive(Subcommand)]
enum Verb {
    /// Install or fetch everything missing: host packages, kernel source, rust-src, bindgen,
    /// libclang, virtme-ng.
    Setup,
    /// Configure and build the test kernel (skipped when nothing it depends on changed).
    Kernel {
        #[command(flatten)]
        kernel: KernelOpts,
    },
    /// Build memchan.ko against the test kernel (or --kdir).
    Module {
        #[command(flatten)]
        kernel: KernelOpts,
    },
    /// Boot the test kernel in QEMU with memchan loaded and run CMD (a shell without CMD).
    Vm {
        #[command(flatten)]
        kernel: KernelOpts,
        /// Kill the guest after this many seconds (0: never).
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Command to run in the guest, with the repository as working directory.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Show a message going from `echo` to a blocked reader, in a guest.
    Demo {
        #[command(flatten)]
        kernel: KernelOpts,
    },
    /// Soak: the stress test alone, for as long as asked.
    Stress {
        #[command(flatten)]
        kernel: KernelOpts,
        /// How long the writers run, in seconds.
        #[arg(long, default_value_t = 600)]
        secs: u64,
    },
    /// The syscall fuzzer alone: a long run, or the replay of a printed seed.
    Fuzz {
        #[command(flatten)]
        kernel: KernelOpts,
        /// Seed to replay (default: a new one, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Number of operations.
        #[arg(long, default_value_t = 100_000)]
        ops: u64,
    },
    /// Benchmarks: memchan against pipes, FIFOs, Unix sockets, POSIX mq and shared memory in one
    /// guest run; writes bench/results/<date>.{json,md}.
    Bench {
        #[command(flatten)]
        kernel: KernelOpts,
        /// Repetitions of every measurement (the median and the spread are reported).
        #[arg(long, default_value_t = 5)]
        reps: u32,
        /// Multiplies every iteration count (0.1 for a quick look).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Do not run: redraw the tables and charts of this raw results file.
        #[arg(long, value_name = "JSON")]
        render: Option<PathBuf>,
        /// Run the benchmark under `perf record -a -g -e cpu-clock` in the guest and write the
        /// profile (kernel and userspace symbols) to bench/results/<date>-profile.txt instead of
        /// the tables. MEMCHAN_BENCH_ONLY=<workload,...> and MEMCHAN_BENCH_TRANSPORTS=<name,...>
        /// narrow what runs (and what is profiled).
        #[arg(long, conflicts_with = "render")]
        profile: bool,
    },
    /// On Debian 13 running a 7.3+ backports kernel, or Debian forky/sid running its 7.2+
    /// kernel: build memchan for it (Rust metadata rebuilt from its linux-source), install
    /// module, udev rule and command, and load it (root steps through sudo).
    Install {
        #[command(flatten)]
        opts: install::InstallOpts,
    },
    /// Run the lint and host tests, then the guest suite on the test kernel, its debug (KASAN)
    /// flavor and Debian's stock kernel (one boot each), then check `install` on a fresh
    /// Debian root booted with its own kernel.
    Test {
        #[command(flatten)]
        kernel: KernelOpts,
        /// Skip the debug-kernel run.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.verb {
        Verb::Setup => setup::run().map(|_| 0),
        Verb::Kernel { kernel } => module::kernel(&kernel).map(|_| 0),
        Verb::Module { kernel } => module::ensure(&kernel).map(|_| 0),
        Verb::Vm {
            kernel,
            timeout,
            cmd,
        } => vm::run_verb(&kernel, timeout, &cmd),
        Verb::Demo { kernel } => demo::run(&kernel),
        Verb::Bench {
            kernel,
            reps,
            scale,
            render,
            profile,
        } => match render {
            Some(json) => bench::render(&json).map(|_| 0),
            None => bench::run(&kernel, reps, scale, profile),
        },
        Verb::Install { opts } => install::run(&opts),
        Verb::Test { kernel, quick } => test::run(&kernel, quick),
        Verb::Stress { kernel, secs } => {
            test::run_one(&kernel, "stress", &format!("MEMCHAN_STRESS_SECS={secs}"))
        }
        Verb::Fuzz { kernel, seed, ops } => {
            let seed = seed
                .map(|s| format!(" MEMCHAN_FUZZ_SEED={s}"))
                .unwrap_or_default();
            test::run_one(&kernel, "fuzz", &format!("MEMCHAN_FUZZ_OPS={ops}{seed}"))
        }
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        Err(err) => {
            eprintln!("\nxtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
