//! Arbitrary headers and bodies through webhook verification for each provider.
//! Never panics, never accepts a forged signature, always accepts a real one.
#![no_main]

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use stackd::git::webhook::{self, Provider};

const PROVIDERS: [Provider; 4] = [
    Provider::GitHub,
    Provider::GitLab,
    Provider::Gitea,
    Provider::Generic,
];

/// Header names the verifier reads, so most inputs hit a real code path.
const KNOWN_HEADERS: [&str; 6] = [
    "x-hub-signature-256",
    "x-gitlab-token",
    "x-gitea-signature",
    "x-forgejo-signature",
    "x-signature-256",
    "content-type",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Request {
    headers: Vec<(Name, Vec<u8>)>,
    body: Vec<u8>,
    secret: Vec<u8>,
}

fn header_map(headers: &[(Name, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = match name {
            Name::Known(i) => {
                HeaderName::from_static(KNOWN_HEADERS[usize::from(*i) % KNOWN_HEADERS.len()])
            }
            Name::Other(name) => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name, value);
        }
    }
    map
}

fuzz_target!(|request: Request| {
    let headers = header_map(&request.headers);
    let signature = webhook::hmac_hex(&request.secret, &request.body);
    for provider in PROVIDERS {
        if let Err(error) = webhook::verify(provider, &headers, &request.body, &request.secret) {
            let _ = (error.to_string(), error.label(), error.status());
        } else if provider != Provider::GitLab {
            // Accepted: the request must carry the real HMAC (case-insensitive hex).
            let carried = headers
                .iter()
                .filter_map(|(_, v)| v.to_str().ok())
                .any(|v| v.to_ascii_lowercase().contains(&signature));
            assert!(carried, "{provider:?} accepted a forged signature");
        }
        let _ = webhook::payload_urls(provider, &request.body);
    }

    // A correctly signed request always verifies.
    let signed = [
        (
            Provider::GitHub,
            "x-hub-signature-256",
            format!("sha256={signature}"),
        ),
        (
            Provider::Generic,
            "x-signature-256",
            format!("sha256={signature}"),
        ),
        (Provider::Gitea, "x-gitea-signature", signature.clone()),
    ];
    for (provider, name, value) in signed {
        let mut map = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(HeaderName::from_static(name), value);
        }
        assert_eq!(
            webhook::verify(provider, &map, &request.body, &request.secret),
            Ok(()),
            "{provider:?} refused a correct signature"
        );
    }
});
