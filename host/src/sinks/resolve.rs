//! Name resolution for the HTTP client, once per [`TTL`] instead of once per connection.
//!
//! An IP address needs no lookup. A name's addresses are kept for [`TTL`]; a lookup runs on
//! a thread of its own, so that one that hangs (a resolver that does not answer) is abandoned
//! when the request's time is up instead of holding the sink. A frontend that moves to
//! another address is reached at it by the next new connection after [`TTL`] (the client
//! opens one when its kept-alive connection fails or sat idle too long).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a name's addresses are used before they are looked up again.
pub const TTL: Duration = Duration::from_secs(60);

/// How a name is looked up when its cached addresses are missing or stale.
type Lookup = dyn Fn(&str, u16, Duration) -> io::Result<Vec<SocketAddr>> + Send;

/// The addresses of one host at a time: see the module's documentation.
pub struct Resolver {
    ttl: Duration,
    lookup: Box<Lookup>,
    /// The last name looked up, its port, when, and its addresses.
    cached: Option<(String, u16, Instant, Vec<SocketAddr>)>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::with(TTL, Box::new(system_lookup))
    }
}

impl Resolver {
    fn with(ttl: Duration, lookup: Box<Lookup>) -> Self {
        Self {
            ttl,
            lookup,
            cached: None,
        }
    }

    /// The addresses of `host` (a name, or an IP address without brackets) at `port`,
    /// waiting at most `timeout` for a lookup.
    pub fn resolve(
        &mut self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some((name, at_port, at, addrs)) = &self.cached {
            if name == host && *at_port == port && at.elapsed() < self.ttl {
                return Ok(addrs.clone());
            }
        }
        let addrs = (self.lookup)(host, port, timeout)?;
        self.cached = Some((host.to_owned(), port, Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// The system's lookup, on its own thread, waited for at most `timeout`.
fn system_lookup(host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    let (answer, answered) = mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let addrs = (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>);
            // The caller may have stopped waiting.
            let _ = answer.send(addrs);
        })?;
    match answered.recv_timeout(timeout) {
        Ok(Ok(addrs)) if addrs.is_empty() => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        )),
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot look up {host}: {e}"),
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("looking up {host} took longer than the request may"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A resolver whose lookups answer 192.0.2.1 and are counted.
    fn counting(ttl: Duration) -> (Resolver, Arc<AtomicUsize>) {
        let lookups = Arc::new(AtomicUsize::new(0));
        let counted = lookups.clone();
        let resolver = Resolver::with(
            ttl,
            Box::new(move |_, port, _| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(vec![SocketAddr::new([192, 0, 2, 1].into(), port)])
            }),
        );
        (resolver, lookups)
    }

    fn resolve(resolver: &mut Resolver, host: &str, port: u16) -> Vec<SocketAddr> {
        resolver
            .resolve(host, port, Duration::from_secs(1))
            .unwrap()
    }

    #[test]
    fn an_address_is_never_looked_up() {
        let (mut resolver, lookups) = counting(TTL);
        let v4 = resolve(&mut resolver, "127.0.0.1", 8000);
        let v6 = resolve(&mut resolver, "::1", 443);
        assert_eq!(v4, ["127.0.0.1:8000".parse::<SocketAddr>().unwrap()]);
        assert_eq!(v6, ["[::1]:443".parse::<SocketAddr>().unwrap()]);
        assert_eq!(lookups.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_name_is_looked_up_once_per_ttl_and_again_when_it_changes() {
        let (mut resolver, lookups) = counting(Duration::from_millis(300));
        for _ in 0..5 {
            assert_eq!(
                resolve(&mut resolver, "frontend.example", 8000),
                ["192.0.2.1:8000".parse::<SocketAddr>().unwrap()]
            );
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
        resolve(&mut resolver, "other.example", 8000);
        assert_eq!(lookups.load(Ordering::SeqCst), 2);
        resolve(&mut resolver, "other.example", 8001);
        assert_eq!(lookups.load(Ordering::SeqCst), 3, "another port");
        std::thread::sleep(Duration::from_millis(350));
        resolve(&mut resolver, "other.example", 8001);
        assert_eq!(lookups.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn the_system_finds_localhost_and_names_a_name_it_cannot_find() {
        let addrs = system_lookup("localhost", 80, Duration::from_secs(10)).unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        let error = system_lookup("calllogger.invalid", 80, Duration::from_secs(10))
            .err()
            .unwrap();
        assert!(error.to_string().contains("calllogger.invalid"), "{error}");
    }
}
