//! The whole Hummer Channel access flow, step by step, against a server
//! embedded in this process.
//!
//! Two users on the blocking adapter: alice (uid 1, logging in with a signed
//! token) and bob (uid 2, appid mode: no token). The steps are numbered as in
//! the access-flow document: create, login, set region, create instance, P2P
//! send / receive / online query, create channel, join, broadcast, user
//! attributes, member list, counts, the notifications, leave; then token
//! refresh, instance info and logout.
//!
//! Every step's result and every event is printed as it arrives. Exits 0
//! when every step did what it should, 1 otherwise.
//!
//! Run it with `cargo run --example quickstart`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hummer_channel::adapters::blocking::Client;
use hummer_channel::adapters::server_tcp::ServerHandle;
use hummer_channel::adapters::ClientError;
use hummer_channel::client::{AttributeOptions, Event, SendOptions, SessionConfig};
use hummer_channel::server::{mint_token, ServerConfig, DEMO_APPID, DEMO_SECRET};
use hummer_channel::{Attributes, Message, Region, Uid};

/// How long to wait for an expected event.
const EVENT_WAIT: Duration = Duration::from_secs(5);

type Step<T = ()> = Result<T, String>;

fn main() -> ExitCode {
    let server = match ServerHandle::spawn(ServerConfig::demo(), ([127, 0, 0, 1], 0).into()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("cannot start the embedded server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("server listening on {}", server.local_addr());
    let result = flow(&server);
    server.shutdown();
    match result {
        Ok(()) => {
            println!("\nevery step passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nFAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits for the event `what` on `client`, printing every event that comes.
fn expect_event(
    name: &str,
    client: &Client,
    what: &str,
    mut wanted: impl FnMut(&Event) -> bool,
) -> Step<Event> {
    loop {
        match client.recv_event(EVENT_WAIT) {
            Some(event) => {
                println!("      {name} <- {event:?}");
                if wanted(&event) {
                    return Ok(event);
                }
            }
            None => return Err(format!("{name} did not receive {what}")),
        }
    }
}

/// Prints whatever events are already queued.
fn show_events(name: &str, client: &Client) {
    while let Some(event) = client.try_recv_event() {
        println!("      {name} <- {event:?}");
    }
}

/// Turns a failed call into the flow's error, naming the step.
fn e(step: &'static str) -> impl Fn(ClientError) -> String {
    move |err| format!("{step}: {err}")
}

fn check(ok: bool, what: &str) -> Step {
    if ok {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}

fn flow(server: &ServerHandle) -> Step {
    let (alice_uid, bob_uid) = (Uid(1), Uid(2));

    println!("[1] create: a client per user (no I/O yet)");
    let connect = || {
        Client::connect(server.local_addr(), SessionConfig::new(DEMO_APPID))
            .map_err(|e| format!("create a client: {e}"))
    };
    let (alice, bob) = (connect()?, connect()?);

    let token = mint_token(DEMO_SECRET, DEMO_APPID, alice_uid.0, unix_s() + 3600);
    let info = alice
        .login(alice_uid, Some(token), Some(Region::Cn))
        .map_err(e("login alice"))?;
    println!(
        "[2] login alice (token) -> instance {} (anonymous: {})",
        info.instance_id, info.is_anonymous
    );
    check(!info.is_anonymous, "alice logged in with a token")?;
    let info = bob
        .login(bob_uid, None, Some(Region::Cn))
        .map_err(e("login bob"))?;
    println!(
        "[2] login bob (appid mode) -> instance {} (anonymous: {})",
        info.instance_id, info.is_anonymous
    );
    check(info.is_anonymous, "bob logged in in appid mode")?;
    show_events("alice", &alice);
    show_events("bob", &bob);

    alice
        .set_user_region(Region::ApSoutheast)
        .map_err(e("set region"))?;
    println!("[3] set user region alice -> ap_southeast: ok");

    println!("[4] create instance: the client itself is the messaging facade (local)");

    let sent = alice
        .send_message_to_user(
            bob_uid,
            Message::new("text", "hello bob"),
            SendOptions::default(),
        )
        .map_err(e("send to user"))?;
    println!(
        "[5.1] alice -> bob P2P: accepted at {} ms, delivered online: {}",
        sent.timestamp_ms, sent.delivered_online
    );
    check(sent.delivered_online, "bob is online")?;
    let got = expect_event("bob", &bob, "alice's P2P message", |e| {
        matches!(e, Event::MessageFromUser { .. })
    })?;
    if let Event::MessageFromUser {
        from_uid, message, ..
    } = got
    {
        println!(
            "[5.2] bob received from {from_uid}: {:?}",
            String::from_utf8_lossy(&message.content)
        );
        check(
            from_uid == alice_uid && &message.content[..] == b"hello bob",
            "the P2P message arrives intact",
        )?;
    }
    let online = alice
        .query_users_online_status(vec![bob_uid, Uid(3)])
        .map_err(e("online status"))?;
    println!("[5.3] online status of 2 and 3: {online:?}");
    check(
        online.get(&bob_uid) == Some(&true) && online.get(&Uid(3)) == Some(&false),
        "bob online, uid 3 offline",
    )?;

    let a_room = alice
        .create_channel(Region::Cn, "quickstart")
        .map_err(e("create channel"))?;
    let b_room = bob
        .create_channel(Region::Cn, "quickstart")
        .map_err(e("create channel"))?;
    println!("[6.1] create channel cn/quickstart (local handles)");

    alice
        .join_channel(a_room, Attributes::new())
        .map_err(e("join alice"))?;
    println!("[6.2] alice joined");
    expect_event("alice", &alice, "the count after her join", |e| {
        matches!(e, Event::NotifyUserCountChange { count: 1, .. })
    })?;
    bob.join_channel(b_room, Attributes::new())
        .map_err(e("join bob"))?;
    println!("[6.2] bob joined");
    expect_event(
        "alice",
        &alice,
        "bob's join (6.11)",
        |e| matches!(e, Event::NotifyJoinChannel { uids, .. } if uids.contains(&bob_uid)),
    )?;
    println!("[6.11] alice was notified that bob joined");
    expect_event("alice", &alice, "the count change (6.15)", |e| {
        matches!(e, Event::NotifyUserCountChange { count: 2, .. })
    })?;
    println!("[6.15] alice was notified of the member count: 2");

    let sent = alice
        .send_message_to_channel(
            a_room,
            Message::new("text", "hello channel"),
            SendOptions::default(),
        )
        .map_err(e("broadcast"))?;
    println!(
        "[6.3] alice broadcast: accepted at {} ms",
        sent.timestamp_ms
    );
    for (name, client) in [("bob", &bob), ("alice", &alice)] {
        expect_event(name, client, "the broadcast (6.10)", |e| {
            matches!(e, Event::ChannelMessage { from_uid, message, .. }
                if *from_uid == alice_uid && &message.content[..] == b"hello channel")
        })?;
        println!("[6.10] {name} received the broadcast");
    }

    let mine = attrs(&[("role", "host"), ("mood", "happy"), ("level", "3")]);
    alice
        .set_local_user_attributes(a_room, mine.clone(), AttributeOptions::default())
        .map_err(e("set attributes"))?;
    println!("[6.4] alice set her attributes {mine:?}");
    expect_event("bob", &bob, "the attribute set notice (6.13)", |e| {
        matches!(e, Event::NotifyUserAttributesSet { uid, attributes, .. }
            if *uid == alice_uid && *attributes == mine)
    })?;
    println!("[6.13] bob was notified of alice's attributes");

    alice
        .delete_local_user_attributes_by_keys(
            a_room,
            vec!["mood".into()],
            AttributeOptions::default(),
        )
        .map_err(e("delete attributes"))?;
    println!("[6.5] alice deleted her attribute \"mood\"");
    expect_event("bob", &bob, "the attribute delete notice (6.14)", |e| {
        matches!(e, Event::NotifyUserAttributesDelete { uid, keys, .. }
            if *uid == alice_uid && keys == &["mood".to_string()])
    })?;
    println!("[6.14] bob was notified of the deletion");

    let list = bob.get_channel_user_list(b_room).map_err(e("user list"))?;
    println!("[6.6] members of {}: {:?}", list.channel_id, list.users);
    check(list.users == vec![alice_uid, bob_uid], "both are members")?;

    let some = bob
        .get_user_attributes_by_keys(b_room, alice_uid, vec!["role".into(), "mood".into()])
        .map_err(e("attributes by keys"))?;
    println!("[6.7] alice's role and mood: {:?}", some.attributes);
    check(
        some.attributes == attrs(&[("role", "host")]),
        "only role is left of the two",
    )?;

    let all = bob
        .get_user_attributes(b_room, alice_uid)
        .map_err(e("all attributes"))?;
    println!("[6.8] all of alice's attributes: {:?}", all.attributes);
    check(
        all.attributes == attrs(&[("role", "host"), ("level", "3")]),
        "role and level are left",
    )?;

    let counts = alice
        .get_channel_user_count(a_room, vec!["quickstart".into(), "empty-room".into()])
        .map_err(e("user count"))?;
    println!("[6.9] member counts: {:?}", counts.user_count);
    check(
        counts.user_count.get("quickstart") == Some(&2)
            && counts.user_count.get("empty-room") == Some(&0),
        "2 members, and 0 in a room nobody is in",
    )?;

    bob.leave_channel(b_room, Attributes::new())
        .map_err(e("leave"))?;
    println!("[6.16] bob left the channel");
    expect_event(
        "alice",
        &alice,
        "bob's leave (6.12)",
        |e| matches!(e, Event::NotifyLeaveChannel { uids, .. } if uids.contains(&bob_uid)),
    )?;
    println!("[6.12] alice was notified that bob left");

    let token = mint_token(DEMO_SECRET, DEMO_APPID, alice_uid.0, unix_s() + 7200);
    alice.refresh_token(token).map_err(e("refresh token"))?;
    println!("[other 2] alice refreshed her token: ok");

    let info = alice.get_instance_info().map_err(e("instance info"))?;
    println!(
        "[other 3] instance info: appid {}, uid {}, instance {}, channels {:?}",
        info.appid, info.uid, info.instance_id, info.channels
    );
    check(
        info.uid == alice_uid && info.channels.len() == 1,
        "alice is in one channel",
    )?;

    alice.logout().map_err(e("logout alice"))?;
    println!("[other 1] alice logged out");
    expect_event("alice", &alice, "DISCONNECTED/LOGOUT", |e| {
        matches!(e, Event::ConnectionStateChanged { reason, .. }
            if *reason == hummer_channel::client::ConnectionReason::Logout)
    })?;
    bob.close();
    println!("[other 1] bob closed (logout and disconnect)");
    alice.close();
    Ok(())
}
