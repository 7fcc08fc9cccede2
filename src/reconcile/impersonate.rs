//! Writes as a repository's ServiceAccount: a client that sends every request
//! of the daemon's own client with `Impersonate-User`, so the cluster's RBAC
//! for that ServiceAccount bounds what the stack can write.

use http::{HeaderValue, Request};
use kube::Client;
use kube::client::Body;

/// `client`, impersonating `user` (`system:serviceaccount:<namespace>:<name>`).
/// The daemon's credentials still authenticate; the API server then authorises
/// each request as `user`, which needs the daemon to hold `impersonate` on it.
pub fn impersonating(client: &Client, user: &str) -> Client {
    // A character a header cannot carry becomes `?`: no ServiceAccount can have
    // that name, so the writes are refused rather than made as the daemon.
    let safe: String = user
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    let value = HeaderValue::from_str(&safe).unwrap_or(HeaderValue::from_static("?"));
    let inner = client.clone();
    let service = tower::service_fn(move |mut request: Request<Body>| {
        let (inner, value) = (inner.clone(), value.clone());
        async move {
            request.headers_mut().insert("impersonate-user", value);
            inner.send(request).await
        }
    });
    Client::new(service, client.default_namespace())
}
