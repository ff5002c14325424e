//! The adapters by URL over every transport: the scenarios of the adapter
//! tests (every operation, reconnect and resume, bulk both ways, calls from
//! threads) over `ws://`, `tls://` and `wss://`, with certificates made by
//! the test (rcgen); a TCP and a WebSocket client in one channel; a server
//! whose certificate the client does not trust. Every wait is bounded.
#![cfg(all(
    feature = "blocking",
    feature = "smol",
    feature = "server-tcp",
    feature = "websocket",
    feature = "tls"
))]

#[macro_use]
mod adapters_support;
#[path = "common/certs.rs"]
mod certs;

use std::net::SocketAddr;
use std::time::Duration;

use adapters_support::*;
use hummer_channel::adapters::server_tcp::{
    bind, Listeners, RunnerConfig, ServerHandle, ServerTls,
};
use hummer_channel::adapters::{Endpoint, Scheme};
use hummer_channel::server::ServerConfig;

/// A CA, and a certificate for `localhost` and 127.0.0.1 it signed: (the
/// CA's PEM, the server's chain PEM, the server's key PEM).
fn certificates() -> (String, String, String) {
    certs::signed(&["localhost", "127.0.0.1"])
}

/// A server with a TCP (or TLS) and a WebSocket (or wss) listener, and the
/// endpoint of `scheme` on it (with the test CA for TLS).
fn spawn_for(scheme: Scheme, config: ServerConfig) -> (ServerHandle, Endpoint) {
    let (ca, chain, key) = certificates();
    let mut runner = RunnerConfig::default().with_threads(2);
    if scheme.is_tls() {
        runner = runner.with_tls(ServerTls::from_pem(chain.as_bytes(), key.as_bytes()).unwrap());
    }
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners =
        Listeners::new(bind(any, &runner).unwrap()).with_websocket(bind(any, &runner).unwrap());
    let server = ServerHandle::spawn_on(config, runner, listeners).unwrap();
    let port = match scheme.is_websocket() {
        true => server.websocket_addr().unwrap().port(),
        false => server.local_addr().port(),
    };
    // By name: the certificate's name is checked, and the host resolved.
    let url = format!("{}://localhost:{port}", scheme.as_str());
    let endpoint = Endpoint::parse(&url).unwrap().with_ca_pem(ca);
    (server, endpoint)
}

// The harnesses define the same macros (wait!, sleep!, both!, ...): each
// is in scope from its declaration on, so each adapter's module below sees
// its own.
#[macro_use]
#[path = "adapters_support/blocking.rs"]
mod blocking_harness;

/// The blocking adapter.
mod blocking {
    use super::*;
    use hummer_channel::adapters::blocking::Client;

    use super::blocking_harness::next_event;

    macro_rules! connect {
        ($addr:expr, $config:expr) => {
            Client::connect_to($addr.clone(), $config).expect("start the driver thread")
        };
    }

    macro_rules! over {
        ($name:ident, $scheme:expr) => {
            mod $name {
                use super::*;

                macro_rules! spawn_server {
                    () => {
                        spawn_for($scheme, ServerConfig::demo())
                    };
                }

                #[test]
                fn every_operation_and_notice() {
                    watchdog(Duration::from_secs(60));
                    scenario_every_operation!();
                }

                #[test]
                fn reconnects_rejoins_and_resumes_exactly_once() {
                    watchdog(Duration::from_secs(60));
                    scenario_reconnect!();
                }

                #[test]
                fn bulk_traffic_both_ways_at_once() {
                    watchdog(Duration::from_secs(60));
                    scenario_bulk_both_ways!(both);
                }

                #[test]
                fn concurrent_calls_from_threads() {
                    watchdog(Duration::from_secs(60));
                    scenario_concurrent_calls!(spawn_all);
                }
            }
        };
    }

    over!(ws, Scheme::Ws);
    over!(tls, Scheme::Tls);
    over!(wss, Scheme::Wss);
}

#[macro_use]
#[path = "adapters_support/smol.rs"]
mod smol_harness;

/// The smol adapter.
mod smol_client {
    use super::*;
    use hummer_channel::adapters::smol::Client;

    use super::smol_harness::{next_event, run};

    macro_rules! connect {
        ($addr:expr, $config:expr) => {
            Client::connect_to($addr.clone(), $config)
        };
    }

    macro_rules! over {
        ($name:ident, $scheme:expr) => {
            mod $name {
                use super::*;

                macro_rules! spawn_server {
                    () => {
                        spawn_for($scheme, ServerConfig::demo())
                    };
                }

                #[test]
                fn every_operation_and_notice() {
                    run(async { scenario_every_operation!() });
                }

                #[test]
                fn reconnects_rejoins_and_resumes_exactly_once() {
                    run(async { scenario_reconnect!() });
                }

                #[test]
                fn bulk_traffic_both_ways_at_once() {
                    run(async { scenario_bulk_both_ways!(both) });
                }
            }
        };
    }

    over!(ws, Scheme::Ws);
    over!(wss, Scheme::Wss);
}

/// A TCP client and a WebSocket client (both adapters) in one channel see
/// each other's messages and presence.
#[test]
fn tcp_and_websocket_clients_share_a_channel() {
    use hummer_channel::adapters::{blocking, smol as async_client};
    use hummer_channel::client::{Event, SendOptions};
    use hummer_channel::{Message, Region, Uid};

    watchdog(Duration::from_secs(60));
    let (server, ws) = spawn_for(Scheme::Ws, ServerConfig::demo());
    let tcp_client = blocking::Client::connect(server.local_addr(), fast_config()).unwrap();
    let ws_client = async_client::Client::connect_to(ws, fast_config());
    tcp_client.login(Uid(1), None, None).unwrap();
    let on_tcp = tcp_client.create_channel(Region::Cn, "mixed").unwrap();
    tcp_client.join_channel(on_tcp, attrs(&[])).unwrap();
    smol::block_on(async {
        ws_client.login(Uid(2), None, None).await.unwrap();
        let on_ws = ws_client.create_channel(Region::Cn, "mixed").unwrap();
        ws_client.join_channel(on_ws, attrs(&[])).await.unwrap();
        let users = ws_client.get_channel_user_list(on_ws).await.unwrap().users;
        assert_eq!(users, vec![Uid(1), Uid(2)]);
        ws_client
            .send_message_to_channel(on_ws, Message::new("t", "from ws"), SendOptions::default())
            .await
            .unwrap();
    });
    let got = loop {
        match tcp_client.recv_event(EVENT_WAIT) {
            Some(Event::ChannelMessage {
                from_uid, message, ..
            }) => break (from_uid, message.content),
            Some(_) => continue,
            None => panic!("the TCP client never got the WebSocket client's message"),
        }
    };
    assert_eq!(got, (Uid(2), bytes::Bytes::from_static(b"from ws")));
    tcp_client
        .send_message_to_user(
            Uid(2),
            Message::new("t", "from tcp"),
            SendOptions::default(),
        )
        .unwrap();
    smol::block_on(async {
        loop {
            match ws_client.next_event().await {
                Some(Event::MessageFromUser {
                    from_uid, message, ..
                }) => {
                    assert_eq!((from_uid, &message.content[..]), (Uid(1), &b"from tcp"[..]));
                    break;
                }
                Some(_) => continue,
                None => panic!("closed"),
            }
        }
        ws_client.close().await;
    });
    tcp_client.close();
    server.shutdown();
}

/// A client that does not trust the server's certificate (another CA, or
/// the system's roots) never logs in: every dial fails in the handshake.
#[test]
fn a_certificate_the_client_does_not_trust_fails_every_dial() {
    use hummer_channel::adapters::blocking::Client;
    use hummer_channel::{ErrorCode, Uid};

    watchdog(Duration::from_secs(60));
    for scheme in [Scheme::Tls, Scheme::Wss] {
        let (server, endpoint) = spawn_for(scheme, ServerConfig::demo());
        let (other_ca, _, _) = certificates();
        let strangers = [
            endpoint.clone().with_ca_pem(other_ca),
            Endpoint::new(endpoint.url().clone()),
        ];
        for stranger in strangers {
            let mut config = fast_config();
            config.timing.login_timeout = Duration::from_millis(800);
            let client = Client::connect_to(stranger, config).unwrap();
            let err = client.login(Uid(1), None, None).unwrap_err();
            assert!(
                matches!(
                    err.code(),
                    Some(ErrorCode::OPERATION_TIMEOUT | ErrorCode::CONNECTION_EXCEPTION)
                ),
                "{scheme:?}: {err:?}"
            );
            client.close();
        }
        // The same server, trusted: logs in.
        let client = Client::connect_to(endpoint, fast_config()).unwrap();
        client.login(Uid(1), None, None).unwrap();
        client.close();
        server.shutdown();
    }
}
