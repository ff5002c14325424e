//! An interactive terminal chat room on the smol adapter.
//!
//! Start a server (`cargo run -p hummer-server`), then in two terminals:
//!
//! ```text
//! cargo run --example chat -- --server 127.0.0.1:7300 --uid 1 --channel lobby
//! cargo run --example chat -- --server 127.0.0.1:7300 --uid 2 --channel lobby
//! ```
//!
//! Lines typed are broadcast to the channel; messages, joins and leaves are
//! shown as they come. `/quit` (or end of input) logs out and exits.
//!
//! Options: `--server ADDR[,ADDR…]` (host:port; several nodes of one
//! service fail over), `--uid N`, `--channel NAME`,
//! `--region R` (default `cn`), `--appid A` (default: the demo app),
//! `--token T` (default: none, appid mode).

use std::net::ToSocketAddrs;
use std::process::ExitCode;

use hummer_channel::adapters::smol::Client;
use hummer_channel::client::{Event, SendOptions, SessionConfig};
use hummer_channel::{AppId, Attributes, Message, Region, Uid};
use smol::io::{AsyncBufReadExt as _, BufReader};
use smol::stream::StreamExt as _;

/// The demo app of `hummer-server` (`server::DEMO_APPID`).
const DEFAULT_APPID: AppId = 10000;

const USAGE: &str = "usage: chat --server ADDR[,ADDR...] --uid N --channel NAME \
                     [--region cn] [--appid A] [--token T]";

struct Args {
    server: String,
    uid: Uid,
    channel: String,
    region: Region,
    appid: AppId,
    token: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut server = None;
    let mut uid = None;
    let mut channel = None;
    let mut region = Region::Cn;
    let mut appid = DEFAULT_APPID;
    let mut token = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => server = Some(value()?),
            "--uid" => uid = Some(value()?.parse().map_err(|e| format!("--uid: {e}"))?),
            "--channel" => channel = Some(value()?),
            "--region" => region = value()?.parse().map_err(|e| format!("--region: {e}"))?,
            "--appid" => appid = value()?.parse().map_err(|e| format!("--appid: {e}"))?,
            "--token" => token = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(Args {
        server: server.ok_or(USAGE)?,
        uid: uid.ok_or(USAGE)?,
        channel: channel.ok_or(USAGE)?,
        region,
        appid,
        token,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match smol::block_on(chat(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn chat(args: Args) -> Result<(), String> {
    // Several nodes of one service, comma-separated: the client fails over
    // between them.
    let mut addrs = Vec::new();
    for server in args.server.split(',') {
        let addr = server
            .to_socket_addrs()
            .map_err(|e| format!("{server}: {e}"))?
            .next()
            .ok_or_else(|| format!("{server}: no address"))?;
        addrs.push(addr);
    }
    let client = Client::connect_any(addrs, SessionConfig::new(args.appid))
        .map_err(|e| format!("--server: {e}"))?;
    let info = client
        .login(args.uid, args.token, Some(args.region))
        .await
        .map_err(|e| format!("login: {e}"))?;
    let room = client
        .create_channel(args.region, &args.channel)
        .map_err(|e| format!("channel: {e}"))?;
    client
        .join_channel(room, Attributes::new())
        .await
        .map_err(|e| format!("join: {e}"))?;
    let members = client
        .get_channel_user_list(room)
        .await
        .map_err(|e| format!("members: {e}"))?;
    println!(
        "* logged in as {} (instance {}), joined {}; members: {:?}",
        args.uid, info.instance_id, args.channel, members.users
    );
    println!("* type a line to send it, /quit to leave");
    // What happened before (connecting, the members' joins) is told above.
    while client.try_next_event().is_some() {}

    // Events are shown by a task of their own while this one reads lines.
    let printer = {
        let client = client.clone();
        let me = args.uid;
        smol::spawn(async move {
            while let Some(event) = client.next_event().await {
                match event {
                    Event::ChannelMessage {
                        from_uid, message, ..
                    } if from_uid != me => {
                        println!("<{from_uid}> {}", String::from_utf8_lossy(&message.content))
                    }
                    Event::ChannelMessage { .. } => {} // our own echo
                    Event::NotifyJoinChannel { uids, .. } => println!("* joined: {uids:?}"),
                    Event::NotifyLeaveChannel { uids, .. } => println!("* left: {uids:?}"),
                    Event::ConnectionStateChanged { state, reason } => {
                        println!("* connection: {state:?} ({reason:?})")
                    }
                    Event::MessagesLost { .. } => println!("* some messages were lost"),
                    _ => {}
                }
            }
        })
    };

    let mut lines = BufReader::new(smol::Unblock::new(std::io::stdin())).lines();
    while let Some(line) = lines.next().await {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        let line = line.trim();
        if line == "/quit" {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let message = Message::new("text", line.to_owned());
        if let Err(e) = client
            .send_message_to_channel(room, message, SendOptions::default())
            .await
        {
            println!("* not sent: {e}");
        }
    }
    let _ = client.leave_channel(room, Attributes::new()).await;
    client.close().await;
    printer.cancel().await;
    println!("* bye");
    Ok(())
}
