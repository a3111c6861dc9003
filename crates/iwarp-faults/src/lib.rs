//! The fault harness: a topology of two network namespaces joined by a veth pair, processes of
//! the stack (`iwfault-peer`) run inside them, and the faults applied to them — a peer killed or
//! stopped, a peer whose packets all vanish, random loss of the segments one namespace sends,
//! RSTs injected into a connection, a host whose kernel forgets its connections.
//!
//! Everything the harness makes is removed when its guard drops, on success or panic:
//! [`Peer`]s are killed and reaped, [`Rule`]s deleted, the [`Lab`]'s namespaces (and the veth
//! pair inside them) deleted. Addresses exist only inside the namespaces (198.18.0.0/15, the
//! benchmarking range), so no traffic leaves the host.
//!
//! It needs root and `ip netns`; loss and vanishing need `iptables-legacy` (this kernel has no
//! netem), and loss `ethtool` (to turn segmentation offload off); [`Lab::forget_tcp`] needs `ss`
//! and a kernel that destroys sockets on request (`CONFIG_INET_DIAG_DESTROY`). [`Lab::unavailable`] says why a test cannot run.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The address of namespace A's end of the veth pair.
pub const ADDR_A: &str = "198.18.0.1";
/// The address of namespace B's end.
pub const ADDR_B: &str = "198.18.0.2";

/// Fills `buf` with the pattern of `seed` (xorshift64*): what a sender writes and a receiver
/// checks, so that every byte of a transfer is verified.
pub fn pattern(seed: u64, buf: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    let last = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

/// Runs a command, returning its output or a message naming it.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The effective user id, from `/proc/self/status`.
fn euid() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `prog` runs at all.
fn runs(prog: &str, args: &[&str]) -> bool {
    Command::new(prog).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

static LABS: AtomicUsize = AtomicUsize::new(0);

/// Two network namespaces, `a` (198.18.0.1/30) and `b` (198.18.0.2/30), joined by a veth pair
/// of a chosen MTU; deleted on drop.
#[derive(Debug)]
pub struct Lab {
    /// Namespace A's name.
    pub a: String,
    /// Namespace B's name.
    pub b: String,
    /// The veth pair's MTU.
    pub mtu: u32,
    /// The namespaces made (what drop deletes).
    made: Vec<String>,
}

impl Lab {
    /// Why the harness cannot run here (`None`: it can): not root, no `ip netns`, or (when
    /// `iptables` is asked for) no `iptables-legacy`.
    pub fn unavailable(iptables: bool) -> Option<String> {
        if euid() != Some(0) {
            return Some("not root (network namespaces need it)".into());
        }
        if !runs("ip", &["netns", "list"]) {
            return Some("`ip netns` is unavailable (install iproute2)".into());
        }
        if iptables && !runs("iptables-legacy", &["--version"]) {
            return Some("`iptables-legacy` is unavailable (install iptables)".into());
        }
        if iptables && !runs("ethtool", &["--version"]) {
            return Some("`ethtool` is unavailable (install ethtool)".into());
        }
        if iptables && !runs("tcpdump", &["--version"]) {
            return Some("`tcpdump` is unavailable (install tcpdump)".into());
        }
        None
    }

    /// Makes the two namespaces and the veth pair (MTU 1500, 9000 or 65535; any the kernel
    /// takes).
    ///
    /// # Errors
    /// The failing command and its output; whatever was made is removed.
    pub fn new(mtu: u32) -> Result<Lab, String> {
        let tag = format!("iwf{}x{}", std::process::id(), LABS.fetch_add(1, Ordering::Relaxed));
        let mut lab = Lab { a: format!("{tag}a"), b: format!("{tag}b"), mtu, made: Vec::new() };
        // On an early return, drop removes exactly the namespaces made so far.
        for ns in [lab.a.clone(), lab.b.clone()] {
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            lab.made.push(ns);
        }
        run(Command::new("ip")
            .args(["link", "add", "iwfa", "netns", &lab.a, "type", "veth", "peer", "name", "iwfb", "netns", &lab.b]))?;
        for (ns, dev, addr) in [(&lab.a, "iwfa", ADDR_A), (&lab.b, "iwfb", ADDR_B)] {
            run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
            run(Command::new("ip").args(["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev]))?;
            run(Command::new("ip").args(["-n", ns, "link", "set", dev, "mtu", &mtu.to_string(), "up"]))?;
        }
        Ok(lab)
    }

    /// Namespace A's or B's name.
    fn ns(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// Starts `iwfault-peer` (at `exe`) with `args` inside namespace `side`. `ip netns exec`
    /// switches namespace and executes the program in place, so the process id is the peer's.
    ///
    /// # Errors
    /// If the process cannot be started.
    pub fn spawn(&self, side: Side, exe: &str, args: &[String]) -> Result<Peer, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.ns(side), exe])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {exe}: {e}"))?;
        let lines = line_reader(child.stdout.take().ok_or("no stdout")?);
        let stdin = child.stdin.take();
        let name = format!("{side:?}:{}", args.first().map(String::as_str).unwrap_or("?"));
        Ok(Peer { name, child, stdin, lines, seen: Vec::new(), quiet: Vec::new() })
    }

    /// Adds an `iptables-legacy` rule to `chain` in namespace `side` (e.g. `OUTPUT`,
    /// `["-j", "DROP"]`); deleted when the returned guard drops.
    ///
    /// # Errors
    /// The failing command and its output.
    pub fn rule(&self, side: Side, chain: &str, spec: &[&str]) -> Result<Rule, String> {
        let ns = self.ns(side).to_string();
        run(Command::new("ip").args(["netns", "exec", &ns, "iptables-legacy", "-A", chain]).args(spec))?;
        Ok(Rule { ns, chain: chain.to_string(), spec: spec.iter().map(|s| s.to_string()).collect() })
    }

    /// Drops a random `probability` of the packets namespace `from` sends to the other one,
    /// as wire-sized segments. Linux TCP always builds segmentation-offload super-packets (up
    /// to 64 KiB), cut into segments only when the device takes them, after the `OUTPUT`
    /// chain: a rule there would drop one super-packet in a hundred. So segmentation offload is
    /// turned off on `from`'s veth (the kernel then cuts at its transmit), and the rule sits
    /// in the other namespace's `INPUT` chain, which sees each segment (veth's receive offload
    /// is off by default). [`Lab::dropped`]`(from.other(), "INPUT")` counts the drops.
    ///
    /// # Errors
    /// As [`rule`](Self::rule), or the `ethtool` command and its output.
    pub fn loss(&self, from: Side, probability: f64) -> Result<Rule, String> {
        self.cut_segments(from)?;
        let p = format!("{probability}");
        self.rule(from.other(), "INPUT", &["-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"])
    }

    /// Turns segmentation offload off on `side`'s veth: the kernel cuts each segment itself when
    /// it transmits, so the other side, and a capture on this veth, see the segments as a NIC
    /// would put them on the wire.
    ///
    /// # Errors
    /// The `ethtool` command and its output.
    pub fn cut_segments(&self, side: Side) -> Result<(), String> {
        let args = ["netns", "exec", self.ns(side), "ethtool", "-K", veth(side), "tso", "off", "gso", "off"];
        run(Command::new("ip").args(args)).map(|_| ())
    }

    /// Starts `tcpdump` on `side`'s veth, writing every TCP frame whole to `path`; returns
    /// once it listens. [`Sniffer::stop`] (or drop) ends it.
    ///
    /// # Errors
    /// If `tcpdump` cannot be started or does not report listening within 10 s.
    pub fn sniff(&self, side: Side, path: &std::path::Path) -> Result<Sniffer, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.ns(side), "tcpdump", "-i", veth(side), "-s", "0", "-U", "-w"])
            .arg(path)
            .arg("tcp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tcpdump: {e}"))?;
        let lines = line_reader(child.stderr.take().ok_or("no stderr")?);
        let mut sniffer = Sniffer { child, lines };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match sniffer.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l.contains("listening on") => return Ok(sniffer),
                Ok(_) => {}
                Err(_) => {
                    sniffer.stop();
                    return Err("tcpdump did not start listening within 10 s".into());
                }
            }
        }
    }

    /// Drops every packet leaving namespace `side`: its peers see it vanish, with no FIN and no
    /// RST.
    ///
    /// # Errors
    /// As [`rule`](Self::rule).
    pub fn blackhole(&self, side: Side) -> Result<Rule, String> {
        self.rule(side, "OUTPUT", &["-j", "DROP"])
    }

    /// Answers every TCP segment that arrives in namespace `side` for local port `port` with an
    /// RST to its sender (`iptables-legacy -A INPUT -p tcp --dport PORT -j REJECT --reject-with
    /// tcp-reset`): the sender's connection is reset as if by the other end, while the socket
    /// in `side` hears nothing more from it. [`Lab::dropped`]`(side, "INPUT")` counts the
    /// segments answered.
    ///
    /// # Errors
    /// As [`rule`](Self::rule).
    pub fn reset_to_sender(&self, side: Side, port: u16) -> Result<Rule, String> {
        let p = port.to_string();
        self.rule(side, "INPUT", &["-p", "tcp", "--dport", &p, "-j", "REJECT", "--reject-with", "tcp-reset"])
    }

    /// Destroys every TCP connection of namespace `side` in its kernel (`ss -K state
    /// connected`; each sends one RST, which a [`blackhole`](Self::blackhole) drops): with a
    /// killed process, what a host crash leaves of its connections, nothing.
    ///
    /// # Errors
    /// The failing command and its output.
    pub fn forget_tcp(&self, side: Side) -> Result<(), String> {
        run(Command::new("ip").args(["netns", "exec", self.ns(side), "ss", "-tK", "state", "connected"])).map(|_| ())
    }

    /// The TCP sockets of namespace `side`, one per line, other than listeners: state, local
    /// address, peer address (`ss -tan`).
    pub fn tcp_sockets(&self, side: Side) -> Vec<String> {
        let out = run(Command::new("ip").args(["netns", "exec", self.ns(side), "ss", "-tanH"])).unwrap_or_default();
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() >= 5 && f[0] != "LISTEN")
            .map(|f| format!("{} {} {}", f[0], f[3], f[4]))
            .collect()
    }

    /// Packets matched by the first rule of `side`'s chain `chain` (`iptables-legacy -L -v -x`):
    /// for the harness's rules, the packets dropped.
    pub fn dropped(&self, side: Side, chain: &str) -> Option<u64> {
        let out = run(Command::new("ip").args([
            "netns",
            "exec",
            self.ns(side),
            "iptables-legacy",
            "-L",
            chain,
            "-v",
            "-x",
            "-n",
        ]))
        .ok()?;
        out.lines().nth(2)?.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth pair (and so the pair) and its rules.
        for ns in &self.made {
            let _ = run(Command::new("ip").args(["netns", "del", ns]));
        }
    }
}

/// One of the lab's two namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// 198.18.0.1.
    A,
    /// 198.18.0.2.
    B,
}

impl Side {
    /// The other namespace.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// The lines a child process writes to `pipe`, read by a thread of their own until the pipe
/// closes or nobody listens.
fn line_reader(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The veth of `side`.
fn veth(side: Side) -> &'static str {
    match side {
        Side::A => "iwfa",
        Side::B => "iwfb",
    }
}

/// A `tcpdump` in one of the lab's namespaces; stopped (by its process id) on drop.
#[derive(Debug)]
pub struct Sniffer {
    child: Child,
    lines: Receiver<String>,
}

impl Sniffer {
    /// Stops the capture (SIGINT, so that it writes out what it holds; SIGKILL after 5 s)
    /// and returns what `tcpdump` said at its end (its packet counts).
    pub fn stop(&mut self) -> Vec<String> {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let mut said = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            said.push(l);
        }
        said
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An `iptables-legacy` rule in one of the lab's namespaces; deleted on drop.
#[derive(Debug)]
pub struct Rule {
    ns: String,
    chain: String,
    spec: Vec<String>,
}

impl Rule {
    /// Deletes the rule now.
    pub fn remove(self) {}
}

impl Drop for Rule {
    fn drop(&mut self) {
        let _ = run(Command::new("ip")
            .args(["netns", "exec", &self.ns, "iptables-legacy", "-D", &self.chain])
            .args(&self.spec));
    }
}

/// A process of the stack in one of the lab's namespaces; killed (by its process id) and reaped
/// on drop.
#[derive(Debug)]
pub struct Peer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// Prefixes of lines not echoed to standard error.
    quiet: Vec<String>,
}

impl Peer {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops echoing output lines that start with `prefix` (a server's thousands of
    /// per-connection lines); they are still collected.
    pub fn quiet(&mut self, prefix: &str) {
        self.quiet.push(prefix.to_string());
    }

    /// Echoes a line to standard error unless it is quiet; keeps it.
    fn keep(&mut self, l: String) {
        if !self.quiet.iter().any(|q| l.starts_with(q.as_str())) {
            eprintln!("  [{}] {l}", self.name);
        }
        self.seen.push(l);
    }

    /// Sends a signal by name (`KILL`, `STOP`, `CONT`) to this process only.
    ///
    /// # Errors
    /// If `kill` fails.
    pub fn signal(&mut self, sig: &str) -> Result<(), String> {
        run(Command::new("kill").args(["-s", sig, &self.pid().to_string()])).map(|_| ())
    }

    /// Writes a line to the process's standard input (the peer's commands: `mark` notes the
    /// time a fault was applied, against which it measures detection).
    pub fn tell(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    /// Waits up to `timeout` for an output line starting with `prefix`; returns it.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.starts_with(prefix);
                    self.keep(l.clone());
                    if hit {
                        return Some(l);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits up to `timeout` until `n` output lines starting with `prefix` have been seen;
    /// returns how many were (fewer on timeout).
    pub fn wait_count(&mut self, prefix: &str, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen.iter().filter(|l| l.starts_with(prefix)).count();
            if seen >= n {
                return seen;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return seen };
            match self.lines.recv_timeout(left) {
                Ok(l) => self.keep(l),
                Err(_) => return seen,
            }
        }
    }

    /// The output lines seen so far that start with `prefix` (without waiting).
    pub fn seen(&self, prefix: &str) -> Vec<String> {
        self.seen.iter().filter(|l| l.starts_with(prefix)).cloned().collect()
    }

    /// Open file descriptors of the process (`/proc/PID/fd`).
    pub fn fd_count(&self) -> Option<usize> {
        Some(std::fs::read_dir(format!("/proc/{}/fd", self.pid())).ok()?.count())
    }

    /// Resident memory of the process in bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    }

    /// Threads of the process (`Threads` of `/proc/PID/status`).
    pub fn threads(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines().find(|l| l.starts_with("Threads:"))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// Every output line that starts with `prefix`, waiting for the process to end (up to
    /// `timeout`).
    pub fn finish(&mut self, prefix: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => self.keep(l),
                Err(_) => break,
            }
        }
        self.seen.iter().filter(|l| l.starts_with(prefix)).cloned().collect()
    }

    /// Waits for the process to exit (up to `timeout`); its exit status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a `key=value ...` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// `key=` parsed as a number.
pub fn num(line: &str, key: &str) -> Option<u64> {
    field(line, key)?.parse().ok()
}
