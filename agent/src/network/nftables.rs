//! The node's nftables table: outbound NAT for the task subnet, DNAT of published ports, and
//! the guard that keeps tasks from the node's own services.
//!
//! The whole table is a pure function of the configuration and the published ports
//! ([`render_table`]); every change re-renders it and replaces it in one `nft -f -` transaction
//! (`table` + `delete table` + the new table are applied atomically by the kernel), so the
//! kernel's rules never drift from the agent's state and a restarted agent restores them as they
//! were. The table is ours alone: nothing else is written to it, and teardown deletes it.
//!
//! Why `nft -f -` and not netlink from Rust: `rustables` (the pure-Rust nftables netlink crate)
//! is GPL-3.0, which Apache-2.0 binaries cannot link, and calls itself rough; `nftnl` (Mullvad's)
//! binds the C libnftnl and libmnl (system -dev packages at build time) and both make us assemble
//! rule bytecode expression by expression. A rules text is reviewable, testable as a string, and
//! `nft list table ip sched` shows an operator exactly what we wrote.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::error::{NetworkError, Result};
use super::host_ports::PublishedPort;
use super::subnet::Ipv4Subnet;

/// The rules text of table `ip <table>` (see the module docs of [`super`] for what each rule
/// does and why).
pub(crate) fn render_table<'a>(
    table: &str,
    bridge: &str,
    subnet: Ipv4Subnet,
    published: impl IntoIterator<Item = &'a PublishedPort>,
) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "table ip {table} {{");
    text.push_str("\tchain published {\n");
    for port in published {
        let _ = writeln!(text, "\t\ttcp dport {} dnat to {}:{}", port.host_port, port.task_ip, port.container_port);
    }
    text.push_str("\t}\n");
    text.push_str(
        "\tchain prerouting {\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tfib daddr type local jump published\n\
         \t}\n",
    );
    // nft 1.0.6 (Debian 12) rejects the `dstnat` keyword on the output hook: -100 is its value.
    text.push_str(
        "\tchain output {\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tfib daddr type local jump published\n\
         \t}\n",
    );
    // route_localnet (needed for 127.0.0.1 -> task DNAT) would also let a task send packets to
    // the node's 127.0.0.0/8 services through the bridge (kube-proxy's CVE-2020-8558): only
    // replies of connections the node opened may arrive from the bridge for loopback addresses.
    // Nor may tasks open connections to the node's own addresses (the gateway's, and every
    // other one): the node's services (the agent API with every task's logs, sshd, the servers)
    // are not theirs. Published ports still work from tasks (DNAT happened in prerouting, so
    // those packets are forwarded, never input), and so do ping to the gateway and the replies
    // of what the node opens (health checks, the ingress). Tasks are given no DNS of the node.
    let _ = write!(
        text,
        "\tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" ip daddr 127.0.0.0/8 ct state != {{ established, related }} counter drop\n\
         \t\tiifname \"{bridge}\" icmp type echo-request accept\n\
         \t\tiifname \"{bridge}\" fib daddr type local ct state != {{ established, related }} counter drop\n\
         \t}}\n"
    );
    let _ = write!(
        text,
        "\tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{bridge}\" ct status dnat ip saddr {{ 127.0.0.0/8, {subnet} }} masquerade\n\
         \t\tip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
         \t}}\n\
         }}\n"
    );
    text
}

/// Replaces table `ip <table>` with `rules` (from [`render_table`]) atomically.
pub(crate) async fn replace_table(nft: &Path, table: &str, rules: &str) -> Result<()> {
    let script = format!("table ip {table}\ndelete table ip {table}\n{rules}");
    run(nft, table, &script).await
}

/// Deletes table `ip <table>`; a missing table is fine.
pub(crate) async fn delete_table(nft: &Path, table: &str) -> Result<()> {
    run(nft, table, &format!("table ip {table}\ndelete table ip {table}\n")).await
}

/// True if table `ip <table>` exists in the caller's network namespace.
pub async fn table_exists(nft: &Path, table: &str) -> Result<bool> {
    let output = Command::new(nft)
        .args(["list", "table", "ip", table])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| spawn_error(nft, table, e))?;
    Ok(output.status.success())
}

async fn run(nft: &Path, table: &str, script: &str) -> Result<()> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| spawn_error(nft, table, e))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = stdin.write_all(script.as_bytes()).await;
    drop(stdin);
    let output = child.wait_with_output().await.map_err(|e| spawn_error(nft, table, e))?;
    if !output.status.success() {
        return Err(NetworkError::Nftables {
            table: table.to_owned(),
            problem: format!(
                "{} -f - failed ({}): {}\nrules were:\n{script}",
                nft.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    written.map_err(|e| spawn_error(nft, table, e))
}

fn spawn_error(nft: &Path, table: &str, error: std::io::Error) -> NetworkError {
    let hint = if error.kind() == std::io::ErrorKind::NotFound { " (install the nftables package)" } else { "" };
    NetworkError::Nftables { table: table.to_owned(), problem: format!("cannot run {}: {error}{hint}", nft.display()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn table_masquerades_outbound_and_forwards_published_ports_from_local_addresses() {
        let published = [
            PublishedPort { host_port: 32768, task_ip: Ipv4Addr::new(10, 88, 0, 2), container_port: 8080 },
            PublishedPort { host_port: 32769, task_ip: Ipv4Addr::new(10, 88, 0, 3), container_port: 80 },
        ];
        let text = render_table("sched", "sched0", "10.88.0.0/24".parse().unwrap(), &published);
        assert!(text.starts_with("table ip sched {\n"), "{text}");
        assert!(text.contains("tcp dport 32768 dnat to 10.88.0.2:8080\n"), "{text}");
        assert!(text.contains("tcp dport 32769 dnat to 10.88.0.3:80\n"), "{text}");
        assert_eq!(text.matches("fib daddr type local jump published").count(), 2);
        assert!(text.contains("ip saddr 10.88.0.0/24 oifname != \"sched0\" masquerade"), "{text}");
        assert!(text.contains("oifname \"sched0\" ct status dnat ip saddr { 127.0.0.0/8, 10.88.0.0/24 } masquerade"), "{text}");
        assert!(text.contains("iifname \"sched0\" ip daddr 127.0.0.0/8 ct state != { established, related } counter drop"), "{text}");
        assert!(
            text.contains("iifname \"sched0\" fib daddr type local ct state != { established, related } counter drop"),
            "tasks open no connection to the node's own addresses: {text}"
        );
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn empty_table_has_an_empty_published_chain() {
        let text = render_table("t", "br", "10.1.2.0/24".parse().unwrap(), &[]);
        assert!(text.contains("chain published {\n\t}\n"), "{text}");
    }
}
