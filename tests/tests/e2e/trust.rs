//! Who gets in: unauthorized clients are refused with their fingerprint and the fix, authorize
//! and invites work without a restart, and a changed node key is refused loudly.

use cmdop_e2e::{client_home, free_port, Home, NodeProcess};

#[test]
fn unauthorized_client_is_refused_then_authorized_without_restart() {
    let node_home = Home::new("trust-node");
    let node = NodeProcess::start(&node_home, free_port(), "");
    let client = client_home("trust-client", "box", &node);
    let fingerprint = client.cmdop(&["id"]).ok().trim().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");

    let err = client.cmdop(&["session", "create", "box"]).fails();
    assert!(
        err.contains(&fingerprint),
        "refusal must name the key: {err}"
    );
    assert!(
        err.contains(&format!("cmdop-node authorize {fingerprint}")),
        "{err}"
    );

    node_home.cmdop_node(&["authorize", &fingerprint]).ok();
    let out = client
        .cmdop(&["session", "create", "box", "--name", "ok"])
        .ok();
    assert!(out.contains("created session"), "{out}");

    // Revoked: refused again at once.
    node_home.cmdop_node(&["revoke", &fingerprint]).ok();
    let err = client.cmdop(&["session", "list", "--host", "box"]).fails();
    assert!(err.contains(&fingerprint), "{err}");
}

#[test]
fn invite_tokens_authorize_once() {
    let node_home = Home::new("invite-node");
    let node = NodeProcess::start(&node_home, free_port(), "");
    let token = node_home.cmdop_node(&["invite"]).ok().trim().to_string();
    let client = Home::new("invite-client");
    client.write_config("client:\n  connect_timeout: 2s\n");
    let out = client
        .cmdop(&["host", "add", "box", &node.addr(), "--token", &token])
        .ok();
    assert!(
        out.contains("authorized by invite") && out.contains("added host box"),
        "{out}"
    );
    client.cmdop(&["session", "create", "box"]).ok();

    // The token is spent: a second client cannot use it.
    let other = Home::new("invite-other");
    other.write_config("client:\n  connect_timeout: 2s\n");
    let err = other
        .cmdop(&["host", "add", "box", &node.addr(), "--token", &token])
        .fails();
    assert!(err.contains("unknown or was already used"), "{err}");
    assert!(!other.cmdop(&["host", "list"]).ok().contains("box "));
}

#[test]
fn changed_node_key_is_refused_loudly() {
    let node_home = Home::new("pin-node");
    let port = free_port();
    let mut node = NodeProcess::start(&node_home, port, "");
    let client = client_home("pin-client", "box", &node);
    let fingerprint = client.cmdop(&["id"]).ok().trim().to_string();
    node_home.cmdop_node(&["authorize", &fingerprint]).ok();
    client.cmdop(&["session", "list", "--host", "box"]).ok();
    let old_key = node_home.cmdop_node(&["id"]).ok().trim().to_string();
    let pins = std::fs::read_to_string(client.path.join("known_nodes")).unwrap();
    assert!(pins.contains(&old_key), "{pins}");

    // The node gets a new key on the same address.
    node.stop();
    std::fs::remove_file(node_home.path.join("node.key")).unwrap();
    std::fs::remove_file(node_home.path.join("node.crt")).unwrap();
    let _node = NodeProcess::spawn(&node_home, port);
    let new_key = node_home.cmdop_node(&["id"]).ok().trim().to_string();
    assert_ne!(old_key, new_key);

    let err = client.cmdop(&["session", "list", "--host", "box"]).fails();
    assert!(err.contains("NODE KEY CHANGED"), "{err}");
    assert!(err.contains(&old_key) && err.contains(&new_key), "{err}");
    assert!(err.contains("cmdop host reset-pin box"), "{err}");

    client.cmdop(&["host", "reset-pin", "box"]).ok();
    client.cmdop(&["session", "list", "--host", "box"]).ok();
}
