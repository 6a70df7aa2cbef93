//! The per-client-IP token bucket on credential attempts (login, register, refreshToken,
//! `currentPassword`, a step-up verification, confirmTotp, a standard user's new username),
//! from `governor`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// `None` when the limit is off.
pub struct IpLimiter(Option<DefaultKeyedRateLimiter<IpAddr>>);

impl IpLimiter {
    /// `per_minute` attempts per client, refilled evenly over the minute; `0` turns it off.
    pub fn new(per_minute: u32) -> Self {
        Self(NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))))
    }

    /// Takes one attempt from `ip`'s bucket; `Err(wait)` when it is empty.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        limiter
            .check_key(&bucket(ip))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops the buckets of clients that are full again, so memory follows active clients.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.0 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The bucket an address draws from: an IPv6 client usually holds a whole /64, so it shares
/// one bucket; an IPv4-mapped address is its IPv4 address.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_names_the_wait() {
        let limiter = IpLimiter::new(3);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(limiter.check(ip), Ok(()));
        }
        let wait = limiter.check(ip).expect_err("fourth attempt refused");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another client has its own bucket.
        assert_eq!(limiter.check("192.0.2.8".parse().expect("ip")), Ok(()));
    }

    #[test]
    fn off_means_unlimited() {
        let limiter = IpLimiter::new(0);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        assert!((0..1000).all(|_| limiter.check(ip).is_ok()));
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        assert_eq!(bucket(a), bucket(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(bucket(mapped), "192.0.2.7".parse::<IpAddr>().expect("ip"));
    }
}
