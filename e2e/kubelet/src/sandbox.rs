//! The pod sandbox: a `sleep` process holding the pod's network namespace (the role of the pause
//! container), joined to the test network namespace by a veth pair. The pod IP lives on the
//! pod's `eth0`; the test namespace routes it to the veth, and the pod's default route goes back
//! through the gateway address, so pods reach each other, the API server and the test harness,
//! and every pod can bind any port (as with real pod networking). Nothing leaves the test's
//! private network namespace.

use std::net::Ipv4Addr;
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

#[derive(Debug)]
pub struct Sandbox {
    child: Child,
    pid: u32,
    pub ip: Ipv4Addr,
    host_if: String,
}

/// Runs a command to completion; its stderr is part of the error.
pub async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Sandbox {
    /// `id` names the veth pair (at most 12 characters).
    pub async fn create(id: &str, ip: Ipv4Addr, gateway: Ipv4Addr) -> anyhow::Result<Sandbox> {
        let child = Command::new("unshare")
            .args(["--net", "--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the sandbox process (unshare --net sleep)")?;
        let pid = child.id().context("sandbox process exited at once")?;
        let host_if = format!("vh{id}");
        let mut sandbox = Sandbox {
            child,
            pid,
            ip,
            host_if,
        };
        if let Err(e) = sandbox.wire(id, gateway).await {
            sandbox.destroy().await;
            return Err(e);
        }
        Ok(sandbox)
    }

    async fn wire(&mut self, id: &str, gateway: Ipv4Addr) -> anyhow::Result<()> {
        let pod_if = format!("vp{id}");
        let pid = self.pid.to_string();
        let ip = self.ip.to_string();
        let gw = gateway.to_string();
        let h = self.host_if.as_str();
        // The sandbox's namespace exists once unshare has exec'd sleep.
        for _ in 0..100 {
            let own = std::fs::read_link("/proc/self/ns/net")?;
            match std::fs::read_link(format!("/proc/{pid}/ns/net")) {
                Ok(ns) if ns != own => break,
                _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        run(
            "ip",
            &["link", "add", h, "type", "veth", "peer", "name", &pod_if],
        )
        .await?;
        run("ip", &["link", "set", &pod_if, "netns", &pid]).await?;
        run("ip", &["link", "set", h, "up"]).await?;
        run("ip", &["route", "add", &format!("{ip}/32"), "dev", h]).await?;
        let inside = format!(
            "ip link set lo up && ip link set {pod_if} name eth0 && \
             ip addr add {ip}/32 dev eth0 && ip link set eth0 up && \
             ip route add {gw} dev eth0 && ip route add default via {gw} dev eth0"
        );
        run(
            "nsenter",
            &["--target", &pid, "--net", "--", "sh", "-c", &inside],
        )
        .await
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the sandbox; the namespace and its veth pair go with the last process in it.
    pub async fn destroy(&mut self) {
        let _ = self.child.kill().await;
        let _ = run("ip", &["link", "del", &self.host_if]).await;
    }
}
