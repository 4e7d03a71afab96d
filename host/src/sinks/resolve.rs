//! Name resolution for the HTTP sinks, once per [`TTL`] instead of once per request.
//!
//! The HTTP client resolves the URL's host before every request, even when it then reuses a
//! kept-alive connection, and with a request timeout set it does so on a new thread each
//! time (so that a hanging lookup can be abandoned): a thread created and joined per record.
//! [`Resolver`] answers an IP address in the URL without any lookup, and keeps a name's
//! addresses for [`TTL`]; a lookup past that runs as before (on its own thread, bounded by
//! the request's timeout). A frontend that moves to another address is reached again within
//! [`TTL`].

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{self, DefaultResolver, ResolvedSocketAddrs};
use ureq::unversioned::transport::NextTimeout;

/// How long a name's addresses are used before they are looked up again.
pub const TTL: Duration = Duration::from_secs(60);

/// How a name is looked up when its cached addresses are missing or stale.
type Lookup =
    dyn Fn(&Uri, &Config, NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> + Send + Sync;

/// The HTTP client's resolver: see the module's documentation.
pub struct Resolver {
    ttl: Duration,
    lookup: Box<Lookup>,
    /// The last name looked up (`host:port`), when, and its addresses.
    cached: Mutex<Option<(String, Instant, ResolvedSocketAddrs)>>,
}

impl Default for Resolver {
    fn default() -> Self {
        let system = DefaultResolver::default();
        Self::with(
            TTL,
            Box::new(move |uri, config, timeout| {
                resolver::Resolver::resolve(&system, uri, config, timeout)
            }),
        )
    }
}

impl Resolver {
    fn with(ttl: Duration, lookup: Box<Lookup>) -> Self {
        Self {
            ttl,
            lookup,
            cached: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("ttl", &self.ttl).finish()
    }
}

impl resolver::Resolver for Resolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // `host:port`, with the scheme's port when the URL has none (as the lookup uses it).
        let key = match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => DefaultResolver::host_and_port(scheme, authority),
            _ => None,
        };
        let Some(key) = key else {
            return (self.lookup)(uri, config, timeout);
        };
        if let Ok(addr) = key.parse::<SocketAddr>() {
            let mut addrs = self.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((name, at, addrs)) = cached.as_ref() {
            if *name == key && at.elapsed() < self.ttl {
                return Ok(addrs.clone());
            }
        }
        let addrs = (self.lookup)(uri, config, timeout)?;
        *cached = Some((key, Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use resolver::Resolver as _;

    use super::*;

    /// A resolver whose lookups answer 192.0.2.1 and are counted.
    fn counting(ttl: Duration) -> (Resolver, Arc<AtomicUsize>) {
        let lookups = Arc::new(AtomicUsize::new(0));
        let counted = lookups.clone();
        let resolver = Resolver::with(
            ttl,
            Box::new(move |_, _, _| {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut addrs = DefaultResolver::default().empty();
                addrs.push("192.0.2.1:8000".parse().unwrap());
                Ok(addrs)
            }),
        );
        (resolver, lookups)
    }

    fn resolve(resolver: &Resolver, url: &str) -> Vec<SocketAddr> {
        let uri: Uri = url.parse().unwrap();
        resolver
            .resolve(&uri, &Config::default(), NextTimeout::default())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn an_address_in_the_url_is_never_looked_up() {
        let (resolver, lookups) = counting(TTL);
        let v4 = resolve(&resolver, "http://127.0.0.1:8000/api/cdr/");
        let v6 = resolve(&resolver, "https://[::1]/api/cdr/");
        assert_eq!(v4, ["127.0.0.1:8000".parse::<SocketAddr>().unwrap()]);
        assert_eq!(v6, ["[::1]:443".parse::<SocketAddr>().unwrap()]);
        assert_eq!(lookups.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_name_is_looked_up_once_per_ttl_and_again_when_it_changes() {
        let (resolver, lookups) = counting(Duration::from_millis(300));
        for _ in 0..5 {
            assert_eq!(
                resolve(&resolver, "http://frontend.example:8000/api/cdr/"),
                ["192.0.2.1:8000".parse::<SocketAddr>().unwrap()]
            );
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
        resolve(&resolver, "http://other.example:8000/api/cdr/");
        assert_eq!(lookups.load(Ordering::SeqCst), 2);
        std::thread::sleep(Duration::from_millis(350));
        resolve(&resolver, "http://other.example:8000/api/cdr/");
        assert_eq!(lookups.load(Ordering::SeqCst), 3);
    }
}
