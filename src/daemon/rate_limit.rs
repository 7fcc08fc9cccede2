//! Client-side rate limiting of API requests, as client-go's token bucket does
//! for controller-runtime (`--kube-qps`, `--kube-burst`): a burst of requests
//! goes at once, then they are spaced to the sustained rate. The server's own
//! limits (429 with `Retry-After`) are honoured by kube's retry layer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use kube::Client;
use kube::client::Body;
use tokio::time::Instant;

/// Defaults, chosen so that a first sync of a thousand stacks is bounded by
/// the API server's latency, not by the client: at 20 ms a request, eight
/// concurrent reconciles and sixteen sync writers make at most about 400 and
/// 800 requests a second. client-go's 5/10, controller-runtime's 20/30 and
/// Flux's 50/300 would make 14,000 writes take minutes.
pub const DEFAULT_QPS: f64 = 500.0;
pub const DEFAULT_BURST: u32 = 1000;

/// A token bucket that hands out reservations: each request learns at once
/// when it may go, so waiters are served in order without polling.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// How long the caller must wait before its request, having taken a token.
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *state;
        let refilled =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * self.qps).min(self.burst);
        let left = refilled - 1.0;
        *state = (left, now.max(last));
        match left >= 0.0 {
            true => Duration::ZERO,
            false => Duration::from_secs_f64(-left / self.qps),
        }
    }
}

/// `client` with every request waiting for a token; `qps <= 0` turns the
/// limit off.
pub fn rate_limited(client: Client, qps: f64, burst: u32) -> Client {
    if qps <= 0.0 {
        return client;
    }
    let bucket = Arc::new(TokenBucket::new(qps, burst));
    let inner = client.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let (inner, bucket) = (inner.clone(), bucket.clone());
        async move {
            let wait = bucket.reserve(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            inner.send(request).await
        }
    });
    Client::new(service, client.default_namespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_requests_are_spaced_to_the_rate() {
        let bucket = TokenBucket::new(10.0, 3);
        let start = Instant::now();
        let waits: Vec<Duration> = (0..6).map(|_| bucket.reserve(start)).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 0, 0, 100, 200, 300]);
    }

    #[test]
    fn tokens_come_back_with_time_up_to_the_burst() {
        let bucket = TokenBucket::new(10.0, 2);
        let start = Instant::now();
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        // Ten seconds idle refill only the burst, not a hundred tokens.
        let later = start + Duration::from_secs(10);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later).as_millis(), 100);
    }
}
