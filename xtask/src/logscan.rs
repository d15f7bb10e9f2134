//! Finds kernel reports (oopses, warnings, lockdep, sanitizer, hung-task, KUnit failures) in a
//! guest's console log.

/// Substrings that mark the start of a kernel report in a kernel log line.
const REPORT_MARKERS: &[&str] = &[
    "BUG:",
    "kernel BUG at",
    "Oops:",
    "WARNING:",
    "general protection fault",
    "Kernel panic",
    "Unable to handle kernel",
    "KASAN:",
    "UBSAN:",
    "KFENCE:",
    "possible circular locking dependency",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "sleeping function called from invalid context",
    "blocked for more than",
    "soft lockup",
    "hard LOCKUP",
    "rcu: INFO:",
    "unreferenced object",
    "panicked at",
    "Rust panic",
    "not ok ",
];

/// Harmless lines that contain a marker: trace_printk's banner, and virtme-ng's init (a user
/// process writing to the kernel log) warning about a missing tool in the guest root.
const IGNORED: &[&str] = &[
    "** If you see this message and you are not debugging **",
    "virtme-ng-init: WARNING:",
];

/// Lines of context printed after a report's first line.
const CONTEXT: usize = 40;

/// Whether `line` is a kernel log line (`[   12.345678] ...`, as printed with `PRINTK_TIME`).
pub fn is_kernel_line(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix('[') else {
        return false;
    };
    let Some((stamp, _)) = rest.split_once(']') else {
        return false;
    };
    let stamp = stamp.trim();
    !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Whether kernel log line `line` starts a kernel report.
pub fn starts_report(line: &str) -> bool {
    let body = line.split_once(']').map_or(line, |(_, b)| b);
    is_kernel_line(line)
        && REPORT_MARKERS.iter().any(|m| body.contains(m))
        && !IGNORED.iter().any(|m| body.contains(m))
}

/// The kernel reports in `log`: each is its first line plus the kernel lines that follow.
pub fn reports(log: &str) -> Vec<String> {
    let kernel: Vec<&str> = log.lines().filter(|l| is_kernel_line(l)).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < kernel.len() {
        if starts_report(kernel[i]) {
            let end = (i + CONTEXT).min(kernel.len());
            out.push(kernel[i..end].join("\n"));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_warning_and_ignores_user_output() {
        let log = "test foo ... ok\nWARNING: from userspace\n[    1.000000] memchan: loading\n\
                   [    2.500000] WARNING: CPU: 0 PID: 1 at lib/foo.c:1\n[    2.500001] Call Trace:\n";
        let r = reports(log);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("lib/foo.c"));
        assert!(r[0].contains("Call Trace"));
    }

    #[test]
    fn clean_log_has_no_reports() {
        let log = "[    0.000000] Linux version 7.3.4\n[    1.0] memchan: loading\nok\n";
        assert!(reports(log).is_empty());
    }

    #[test]
    fn kunit_failure_is_a_report() {
        let log = "[    3.1] # memchan_ring: pass:2 fail:1\n[    3.2]     not ok 3 wraps\n";
        assert_eq!(reports(log).len(), 1);
    }

    #[test]
    fn kernel_line_detection() {
        assert!(is_kernel_line("[   12.345678] hello"));
        assert!(!is_kernel_line("[guest] hello"));
        assert!(!is_kernel_line("plain"));
    }
}
