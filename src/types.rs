//! Plain data shared by the client, the server and the application: ids,
//! regions, messages and attributes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::wire;

/// An application id: every user, channel and count lives inside one appid.
pub type AppId = u32;

/// An attribute map (string -> string). Keys are `[A-Za-z0-9_-]`, see [`crate::limits`].
/// Ordered, so that encodings and test output are deterministic.
pub type Attributes = BTreeMap<String, String>;

/// A 64-bit user id. In JSON it is a decimal string, as in the JS SDK (JS
/// numbers cannot hold 64 bits).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uid(pub u64);

impl From<u64> for Uid {
    fn from(v: u64) -> Self {
        Uid(v)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Uid {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Uid)
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl serde::Serialize for Uid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de> serde::Deserialize<'de> for Uid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a user or a channel lives. A channel is identified by (region, channel id).
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Region {
    /// `cn`
    Cn,
    /// `ap_southeast`
    ApSoutheast,
    /// `ap_south`
    ApSouth,
    /// `us`
    Us,
    /// `me_east`
    MeEast,
    /// `sa_east`
    SaEast,
}

impl Region {
    /// Every region, in wire order.
    pub const ALL: [Region; 6] = [
        Region::Cn,
        Region::ApSoutheast,
        Region::ApSouth,
        Region::Us,
        Region::MeEast,
        Region::SaEast,
    ];

    /// The name used by the JS SDK (`cn`, `ap_southeast`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Cn => "cn",
            Region::ApSoutheast => "ap_southeast",
            Region::ApSouth => "ap_south",
            Region::Us => "us",
            Region::MeEast => "me_east",
            Region::SaEast => "sa_east",
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> i32 {
        wire::Region::from(self) as i32
    }

    /// From the wire value; `None` for unspecified or unknown values.
    pub fn from_wire(v: i32) -> Option<Region> {
        match wire::Region::try_from(v).ok()? {
            wire::Region::Unspecified => None,
            wire::Region::Cn => Some(Region::Cn),
            wire::Region::ApSoutheast => Some(Region::ApSoutheast),
            wire::Region::ApSouth => Some(Region::ApSouth),
            wire::Region::Us => Some(Region::Us),
            wire::Region::MeEast => Some(Region::MeEast),
            wire::Region::SaEast => Some(Region::SaEast),
        }
    }
}

impl From<Region> for wire::Region {
    fn from(r: Region) -> Self {
        match r {
            Region::Cn => wire::Region::Cn,
            Region::ApSoutheast => wire::Region::ApSoutheast,
            Region::ApSouth => wire::Region::ApSouth,
            Region::Us => wire::Region::Us,
            Region::MeEast => wire::Region::MeEast,
            Region::SaEast => wire::Region::SaEast,
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a region name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region {0:?} (expected one of cn, ap_southeast, ap_south, us, me_east, sa_east)")]
pub struct UnknownRegion(pub String);

impl FromStr for Region {
    type Err = UnknownRegion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRegion(s.to_owned()))
    }
}

/// A channel's identity: a channel id inside a region (inside the appid).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct ChannelKey {
    /// The region the channel lives in.
    pub region: Region,
    /// The channel's name inside (appid, region): 1..=64 bytes.
    pub channel_id: String,
}

impl ChannelKey {
    /// A key from its parts.
    pub fn new(region: Region, channel_id: impl Into<String>) -> Self {
        ChannelKey {
            region,
            channel_id: channel_id.into(),
        }
    }

    pub(crate) fn to_wire(&self) -> wire::ChannelKey {
        wire::ChannelKey {
            region: self.region.to_wire(),
            channel_id: self.channel_id.clone(),
        }
    }

    /// A wire key with a known region (`None` otherwise).
    pub(crate) fn from_wire(key: &wire::ChannelKey) -> Option<ChannelKey> {
        Some(ChannelKey::new(
            Region::from_wire(key.region)?,
            key.channel_id.clone(),
        ))
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.channel_id)
    }
}

/// A P2P or channel message: `{ type, content, appExtras }` in the JS SDK.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct Message {
    /// The application's message type (`type` in the JS SDK).
    #[cfg_attr(feature = "serde", serde(rename = "type"))]
    pub kind: String,
    /// Opaque bytes.
    pub content: Bytes,
    /// Application extras.
    pub app_extras: Attributes,
}

impl Message {
    /// A message of `kind` with `content` and no extras.
    pub fn new(kind: impl Into<String>, content: impl Into<Bytes>) -> Self {
        Message {
            kind: kind.into(),
            content: content.into(),
            app_extras: Attributes::new(),
        }
    }

    /// The size counted against the message limit: content + type + extras
    /// (every key and value).
    pub fn counted_size(&self) -> usize {
        self.content.len()
            + self.kind.len()
            + self
                .app_extras
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

impl From<wire::ChatMessage> for Message {
    fn from(m: wire::ChatMessage) -> Self {
        Message {
            kind: m.r#type,
            content: m.content,
            app_extras: m.app_extras,
        }
    }
}

impl From<Message> for wire::ChatMessage {
    fn from(m: Message) -> Self {
        wire::ChatMessage {
            r#type: m.kind,
            content: m.content,
            app_extras: m.app_extras,
        }
    }
}
