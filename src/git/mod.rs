//! Git source: mirrored fetch, stack discovery, webhooks and local watch.
