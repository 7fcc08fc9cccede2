//! The fake API server, exercised through the real kube client.

#[path = "fake_api/mod.rs"]
mod fake_api;

use fake_api::FakeApiServer;

#[tokio::test]
async fn starts() {
    let (server, client) = FakeApiServer::start().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    drop(server);
}
