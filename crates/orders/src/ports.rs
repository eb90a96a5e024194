//! Free loopback ports for systems that run side by side: the tests, each
//! with its own system, and `cargo xtask demo`.
//!
//! The usual trick, binding port 0 and closing the socket, leaves a window
//! in which the port can be taken before the service binds it: every
//! outgoing connection on the machine gets its local port from the same
//! ephemeral range. Under parallel tests that shows up as "Address already
//! in use". So ports are picked below Linux's ephemeral range (32768 and
//! up by default), where the kernel never hands out outgoing ports, and
//! reserved across processes with an exclusive lock on a file named after
//! the port, held until this process exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::Range;
use std::sync::Mutex;

/// Ports handed out. Below the ephemeral range, above most well-known services.
const RANGE: Range<u16> = 20_000..32_000;

/// The locks of the ports this process reserved, held until it exits.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Reserves a loopback port no other process using this function will get,
/// and that nothing was listening on when it was reserved.
pub fn reserve() -> io::Result<u16> {
    let dir = std::env::temp_dir().join("orders-port-locks");
    std::fs::create_dir_all(&dir)?;
    let len = u32::from(RANGE.end - RANGE.start);
    let first = start_offset() % len;
    for i in 0..len {
        let port = RANGE.start + ((first + i) % len) as u16;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => return Err(e),
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue; // something outside our reach listens there
        }
        HELD.lock().unwrap().push(lock);
        return Ok(port);
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free port in {RANGE:?}"),
    ))
}

/// Where to start looking: differs between processes, so parallel tests
/// rarely contend for the same lock.
fn start_offset() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    std::process::id().wrapping_mul(7919).wrapping_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..20).map(|_| reserve().unwrap()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            assert!(RANGE.contains(&port));
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }
}
