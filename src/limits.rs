//! The documented limits (hummer-api.md, "Limits") and the one copy of every
//! rule that checks them. The client checks before sending, the server checks
//! again on receipt: both call these functions with the same [`Limits`].

use crate::error::ErrorCode;
use crate::types::{Attributes, Message};
use crate::wire::AttributeOp;

/// The limits in force. The defaults are those of hummer-api.md.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Limits {
    /// content + type + extras of one message (2007).
    pub max_message_size: usize,
    /// Bytes of a channel id.
    pub max_channel_id_len: usize,
    /// Bytes of an attribute key.
    pub max_attribute_key_len: usize,
    /// Bytes of an attribute value.
    pub max_attribute_value_len: usize,
    /// Keys of one user's attributes in one channel (5103).
    pub max_user_attribute_items: usize,
    /// Bytes (keys + values) of one user's attributes in one channel (5104).
    pub max_user_attributes_size: usize,
    /// Keys of a channel's attributes (5105).
    pub max_channel_attribute_items: usize,
    /// Bytes (keys + values) of a channel's attributes (5106).
    pub max_channel_attributes_size: usize,
    /// Channels joined by one instance (5109).
    pub max_joined_channels: usize,
    /// Channel ids in one count query (5109).
    pub max_channel_ids_per_query: usize,
    /// Uids in one online-status query (2001).
    pub max_uids_per_query: usize,
    /// Bytes of one frame on the wire.
    pub max_frame_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 32 * 1024,
            max_channel_id_len: 64,
            max_attribute_key_len: 32,
            max_attribute_value_len: 8 * 1024,
            max_user_attribute_items: 32,
            max_user_attributes_size: 16 * 1024,
            max_channel_attribute_items: 32,
            max_channel_attributes_size: 32 * 1024,
            max_joined_channels: 20,
            max_channel_ids_per_query: 32,
            max_uids_per_query: 256,
            max_frame_size: 64 * 1024,
        }
    }
}

/// Whose attributes a write or a check is about: the codes differ.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AttributeScope {
    /// One user's attributes in one channel (5103, 5104).
    User,
    /// A channel's attributes (5105, 5106).
    Channel,
}

/// An argument that breaks a limit, with the code the service gives it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// An id or list that must not be empty is. 2001.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A string is longer than allowed. 2001.
    #[error("{field} is {len} bytes, more than {max}")]
    TooLong {
        /// Which argument.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An attribute key with a character outside `[A-Za-z0-9_-]`. 2001.
    #[error("attribute key {0:?} has characters outside [A-Za-z0-9_-]")]
    BadKey(String),
    /// A uid of 0 (not a user). 2001.
    #[error("uid 0 is not a valid user id")]
    ZeroUid,
    /// A region the wire does not know. 2001.
    #[error("unknown or unspecified region")]
    BadRegion,
    /// A list longer than allowed (2001 for uids, 5109 for channel ids).
    #[error("{count} {field} in one request, more than {max}")]
    TooMany {
        /// Which list.
        field: &'static str,
        /// Its length.
        count: usize,
        /// The limit.
        max: usize,
        /// The code for this list.
        code: ErrorCode,
    },
    /// A message larger than allowed. 2007.
    #[error("message of {size} bytes exceeds {max}")]
    MessageTooLarge {
        /// Counted size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Too many attribute keys (5103 user, 5105 channel).
    #[error("{count} attributes, more than {max}")]
    AttributeItems {
        /// User or channel.
        scope: AttributeScope,
        /// Keys after the change.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Attributes too large (5104 user, 5106 channel); also one value over
    /// the per-value limit.
    #[error("attributes of {size} bytes, more than {max}")]
    AttributeSize {
        /// User or channel.
        scope: AttributeScope,
        /// Bytes after the change (or of the one value).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// More channels joined than allowed. 5109.
    #[error("already {joined} channels joined, the limit is {max}")]
    TooManyChannels {
        /// Channels joined.
        joined: usize,
        /// The limit.
        max: usize,
    },
}

impl LimitError {
    /// The service code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            LimitError::Empty(_)
            | LimitError::TooLong { .. }
            | LimitError::BadKey(_)
            | LimitError::ZeroUid
            | LimitError::BadRegion => ErrorCode::INVALID_PARAMETER,
            LimitError::TooMany { code, .. } => *code,
            LimitError::MessageTooLarge { .. } => ErrorCode::MSG_SIZE_LIMIT_EXCEEDED,
            LimitError::AttributeItems { scope, .. } => match scope {
                AttributeScope::User => ErrorCode::USER_ATTRIBUTES_ITEMS_OVERFLOW,
                AttributeScope::Channel => ErrorCode::CHANNEL_ATTRIBUTES_ITEMS_OVERFLOW,
            },
            LimitError::AttributeSize { scope, .. } => match scope {
                AttributeScope::User => ErrorCode::USER_ATTRIBUTES_SIZE_OVERFLOW,
                AttributeScope::Channel => ErrorCode::CHANNEL_ATTRIBUTES_SIZE_OVERFLOW,
            },
            LimitError::TooManyChannels { .. } => ErrorCode::CHANNEL_COUNT_LIMIT_EXCEEDED,
        }
    }
}

/// The size counted for an attribute map: every key and value.
pub fn attributes_size(attributes: &Attributes) -> usize {
    attributes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

impl Limits {
    /// A channel id: 1..=`max_channel_id_len` bytes.
    pub fn check_channel_id(&self, id: &str) -> Result<(), LimitError> {
        check_len("channel_id", id, self.max_channel_id_len)
    }

    /// A uid: not 0.
    pub fn check_uid(&self, uid: u64) -> Result<(), LimitError> {
        if uid == 0 {
            return Err(LimitError::ZeroUid);
        }
        Ok(())
    }

    /// An attribute key: 1..=`max_attribute_key_len` bytes of `[A-Za-z0-9_-]`.
    pub fn check_key(&self, key: &str) -> Result<(), LimitError> {
        check_len("attribute key", key, self.max_attribute_key_len)?;
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(LimitError::BadKey(key.to_owned()));
        }
        Ok(())
    }

    /// A non-empty list of keys (for delete and get-by-keys).
    pub fn check_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), LimitError> {
        let mut any = false;
        for k in keys {
            any = true;
            self.check_key(k)?;
        }
        if !any {
            return Err(LimitError::Empty("keys"));
        }
        Ok(())
    }

    /// A message: its counted size within `max_message_size`.
    pub fn check_message(&self, message: &Message) -> Result<(), LimitError> {
        let size = message.counted_size();
        if size > self.max_message_size {
            return Err(LimitError::MessageTooLarge {
                size,
                max: self.max_message_size,
            });
        }
        Ok(())
    }

    /// The keys and values of an attribute write, each on its own.
    pub fn check_attribute_entries(
        &self,
        scope: AttributeScope,
        attributes: &Attributes,
    ) -> Result<(), LimitError> {
        for (k, v) in attributes {
            self.check_key(k)?;
            if v.len() > self.max_attribute_value_len {
                return Err(LimitError::AttributeSize {
                    scope,
                    size: v.len(),
                    max: self.max_attribute_value_len,
                });
            }
        }
        Ok(())
    }

    /// A whole attribute set (after a change): count and total size.
    pub fn check_attribute_set(
        &self,
        scope: AttributeScope,
        attributes: &Attributes,
    ) -> Result<(), LimitError> {
        let (max_items, max_size) = match scope {
            AttributeScope::User => (self.max_user_attribute_items, self.max_user_attributes_size),
            AttributeScope::Channel => (
                self.max_channel_attribute_items,
                self.max_channel_attributes_size,
            ),
        };
        if attributes.len() > max_items {
            return Err(LimitError::AttributeItems {
                scope,
                count: attributes.len(),
                max: max_items,
            });
        }
        let size = attributes_size(attributes);
        if size > max_size {
            return Err(LimitError::AttributeSize {
                scope,
                size,
                max: max_size,
            });
        }
        Ok(())
    }

    /// The attribute set after `op` on `current`, checked against the
    /// limits. The client calls it before sending with `current` empty (only
    /// the server knows the set, so only what the write breaks on its own is
    /// caught there), the server on receipt with the set it holds.
    pub(crate) fn apply_attribute_op(
        &self,
        scope: AttributeScope,
        current: &Attributes,
        op: AttributeOp,
        attributes: &Attributes,
        keys: &[String],
    ) -> Result<Attributes, LimitError> {
        let new = match op {
            AttributeOp::Set => {
                self.check_attribute_entries(scope, attributes)?;
                attributes.clone()
            }
            AttributeOp::AddOrUpdate => {
                if attributes.is_empty() {
                    return Err(LimitError::Empty("attributes"));
                }
                self.check_attribute_entries(scope, attributes)?;
                let mut new = current.clone();
                new.extend(attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
                new
            }
            AttributeOp::Delete => {
                self.check_keys(keys)?;
                let mut new = current.clone();
                for k in keys {
                    new.remove(k);
                }
                new
            }
            AttributeOp::Clear => Attributes::new(),
            // Not an operation: the server refuses it before asking.
            AttributeOp::Unspecified => return Err(LimitError::Empty("attribute op")),
        };
        self.check_attribute_set(scope, &new)?;
        Ok(new)
    }

    /// The uids of an online-status query: 1..=`max_uids_per_query`, none 0.
    pub fn check_uid_query(&self, uids: &[u64]) -> Result<(), LimitError> {
        if uids.is_empty() {
            return Err(LimitError::Empty("uids"));
        }
        if uids.len() > self.max_uids_per_query {
            return Err(LimitError::TooMany {
                field: "uids",
                count: uids.len(),
                max: self.max_uids_per_query,
                code: ErrorCode::INVALID_PARAMETER,
            });
        }
        uids.iter().try_for_each(|&u| self.check_uid(u))
    }

    /// The channel ids of a count query: 1..=`max_channel_ids_per_query` valid ids.
    pub fn check_channel_id_query(&self, ids: &[String]) -> Result<(), LimitError> {
        if ids.is_empty() {
            return Err(LimitError::Empty("channel_ids"));
        }
        if ids.len() > self.max_channel_ids_per_query {
            return Err(LimitError::TooMany {
                field: "channel_ids",
                count: ids.len(),
                max: self.max_channel_ids_per_query,
                code: ErrorCode::CHANNEL_COUNT_LIMIT_EXCEEDED,
            });
        }
        ids.iter().try_for_each(|id| self.check_channel_id(id))
    }

    /// One more join when `joined` channels are joined already.
    pub fn check_join(&self, joined: usize) -> Result<(), LimitError> {
        if joined >= self.max_joined_channels {
            return Err(LimitError::TooManyChannels {
                joined,
                max: self.max_joined_channels,
            });
        }
        Ok(())
    }
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), LimitError> {
    if s.is_empty() {
        return Err(LimitError::Empty(field));
    }
    if s.len() > max {
        return Err(LimitError::TooLong {
            field,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_for_charset_and_length() {
        let l = Limits::default();
        assert!(l.check_key("score_1-a").is_ok());
        assert_eq!(l.check_key(""), Err(LimitError::Empty("attribute key")));
        assert!(matches!(l.check_key("a b"), Err(LimitError::BadKey(_))));
        assert!(matches!(l.check_key("é"), Err(LimitError::BadKey(_))));
        assert!(matches!(
            l.check_key(&"k".repeat(33)),
            Err(LimitError::TooLong { .. })
        ));
    }

    #[test]
    fn attribute_sets_map_to_scope_codes() {
        let l = Limits::default();
        let many: Attributes = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(
            l.check_attribute_set(AttributeScope::User, &many)
                .unwrap_err()
                .code(),
            ErrorCode::USER_ATTRIBUTES_ITEMS_OVERFLOW
        );
        assert_eq!(
            l.check_attribute_set(AttributeScope::Channel, &many)
                .unwrap_err()
                .code(),
            ErrorCode::CHANNEL_ATTRIBUTES_ITEMS_OVERFLOW
        );
        let big: Attributes = (0..3)
            .map(|i| (format!("k{i}"), "v".repeat(8000)))
            .collect();
        assert_eq!(
            l.check_attribute_set(AttributeScope::User, &big)
                .unwrap_err()
                .code(),
            ErrorCode::USER_ATTRIBUTES_SIZE_OVERFLOW
        );
        assert!(l.check_attribute_set(AttributeScope::Channel, &big).is_ok());
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn attribute_ops_give_the_new_set() {
        let l = Limits::default();
        let scope = AttributeScope::User;
        let current = attrs(&[("a", "1"), ("b", "2")]);
        let write = attrs(&[("b", "3"), ("c", "4")]);
        let keys = vec!["a".to_string(), "z".to_string()];
        let apply = |op| l.apply_attribute_op(scope, &current, op, &write, &keys);
        assert_eq!(apply(AttributeOp::Set), Ok(write.clone()));
        let merged = attrs(&[("a", "1"), ("b", "3"), ("c", "4")]);
        assert_eq!(apply(AttributeOp::AddOrUpdate), Ok(merged));
        assert_eq!(apply(AttributeOp::Delete), Ok(attrs(&[("b", "2")])));
        assert_eq!(apply(AttributeOp::Clear), Ok(Attributes::new()));
        assert_eq!(
            apply(AttributeOp::Unspecified),
            Err(LimitError::Empty("attribute op"))
        );
    }

    #[test]
    fn attribute_ops_check_their_arguments() {
        let l = Limits::default();
        let none = Attributes::new();
        let apply = |scope, op, write: &Attributes, keys: &[String]| {
            l.apply_attribute_op(scope, &none, op, write, keys)
                .map_err(|e| e.code())
        };
        let bad_key = attrs(&[("a b", "1")]);
        let long_value = attrs(&[("a", &"v".repeat(8 * 1024 + 1))]);
        for op in [AttributeOp::Set, AttributeOp::AddOrUpdate] {
            assert_eq!(
                apply(AttributeScope::User, op, &bad_key, &[]),
                Err(ErrorCode::INVALID_PARAMETER)
            );
            assert_eq!(
                apply(AttributeScope::Channel, op, &long_value, &[]),
                Err(ErrorCode::CHANNEL_ATTRIBUTES_SIZE_OVERFLOW)
            );
        }
        // Set may empty the set; add-or-update must add something.
        assert_eq!(
            apply(AttributeScope::User, AttributeOp::Set, &none, &[]),
            Ok(none.clone())
        );
        assert_eq!(
            l.apply_attribute_op(
                AttributeScope::User,
                &none,
                AttributeOp::AddOrUpdate,
                &none,
                &[]
            ),
            Err(LimitError::Empty("attributes"))
        );
        // Delete needs valid keys, and some.
        assert_eq!(
            l.apply_attribute_op(AttributeScope::User, &none, AttributeOp::Delete, &none, &[]),
            Err(LimitError::Empty("keys"))
        );
        assert_eq!(
            apply(
                AttributeScope::User,
                AttributeOp::Delete,
                &none,
                &["a b".to_string()]
            ),
            Err(ErrorCode::INVALID_PARAMETER)
        );
    }

    #[test]
    fn attribute_ops_check_the_set_they_make() {
        let l = Limits::default();
        // 31 small keys held, 2 large values written: the merged set breaks
        // the item bound first (the write alone would break the size bound).
        let current: Attributes = (0..31).map(|i| (format!("k{i}"), String::new())).collect();
        let write: Attributes = (0..2)
            .map(|i| (format!("w{i}"), "v".repeat(8 * 1024)))
            .collect();
        let code = |scope, op| {
            l.apply_attribute_op(scope, &current, op, &write, &[])
                .unwrap_err()
                .code()
        };
        assert_eq!(
            code(AttributeScope::User, AttributeOp::AddOrUpdate),
            ErrorCode::USER_ATTRIBUTES_ITEMS_OVERFLOW
        );
        assert_eq!(
            code(AttributeScope::User, AttributeOp::Set),
            ErrorCode::USER_ATTRIBUTES_SIZE_OVERFLOW
        );
        // The channel bounds are larger: the write alone fits, merged not.
        assert_eq!(
            code(AttributeScope::Channel, AttributeOp::AddOrUpdate),
            ErrorCode::CHANNEL_ATTRIBUTES_ITEMS_OVERFLOW
        );
        assert!(l
            .apply_attribute_op(
                AttributeScope::Channel,
                &current,
                AttributeOp::Set,
                &write,
                &[]
            )
            .is_ok());
        // A delete or a clear is checked too (a set held beyond the bounds).
        let too_many: Attributes = (0..40).map(|i| (format!("k{i}"), String::new())).collect();
        let keys = vec!["k0".to_string()];
        assert_eq!(
            l.apply_attribute_op(
                AttributeScope::User,
                &too_many,
                AttributeOp::Delete,
                &write,
                &keys
            )
            .unwrap_err()
            .code(),
            ErrorCode::USER_ATTRIBUTES_ITEMS_OVERFLOW
        );
        assert!(l
            .apply_attribute_op(
                AttributeScope::User,
                &too_many,
                AttributeOp::Clear,
                &write,
                &keys
            )
            .is_ok());
    }

    #[test]
    fn query_lists_are_bounded() {
        let l = Limits::default();
        assert_eq!(
            l.check_uid_query(&vec![1; 257]).unwrap_err().code(),
            ErrorCode::INVALID_PARAMETER
        );
        assert!(l.check_uid_query(&vec![1; 256]).is_ok());
        assert!(l.check_uid_query(&[1, 0]).is_err());
        let ids: Vec<String> = (0..33).map(|i| i.to_string()).collect();
        assert_eq!(
            l.check_channel_id_query(&ids).unwrap_err().code(),
            ErrorCode::CHANNEL_COUNT_LIMIT_EXCEEDED
        );
    }

    #[test]
    fn message_size_counts_type_content_and_extras() {
        let l = Limits::default();
        let mut m = Message::new("t", vec![0u8; 32 * 1024 - 1]);
        assert!(l.check_message(&m).is_ok());
        m.app_extras.insert("k".into(), String::new());
        assert_eq!(
            l.check_message(&m).unwrap_err().code(),
            ErrorCode::MSG_SIZE_LIMIT_EXCEEDED
        );
    }
}
