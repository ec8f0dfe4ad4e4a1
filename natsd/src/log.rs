//! Reading a `nats-server` log: readiness, the client port it listens on, and the
//! tail to show when it fails.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

/// What a server's log says about its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// Still starting.
    Starting,
    /// Ready for clients on this port.
    Ready(u16),
    /// Could not bind its client port.
    PortInUse,
}

/// Reads the log from `offset` (the size it had before this start) to the end.
pub fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// Where a start stands, from the log text of that start.
pub fn startup(text: &str) -> Startup {
    if text.contains("address already in use") {
        return Startup::PortInUse;
    }
    let port = text.lines().find_map(|l| {
        l.split_once("Listening for client connections on ")
            .and_then(|(_, addr)| addr.trim().rsplit(':').next()?.parse::<u16>().ok())
    });
    match port {
        Some(port) if text.contains("Server is ready") => Startup::Ready(port),
        _ => Startup::Starting,
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_and_port_come_from_the_log() {
        let starting = "[1] [INF] Starting nats-server\n[1] [INF] Listening for client connections on 127.0.0.1:4567\n";
        assert_eq!(startup(starting), Startup::Starting);
        let ready = format!("{starting}[1] [INF] Server is ready\n");
        assert_eq!(startup(&ready), Startup::Ready(4567));
        let busy = "[1] [FTL] Error listening on port: 127.0.0.1:4222, \"listen tcp 127.0.0.1:4222: bind: address already in use\"";
        assert_eq!(startup(busy), Startup::PortInUse);
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
