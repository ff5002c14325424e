//! The Session (skeleton: API only).
#![allow(unused_variables, missing_docs)]

use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::error::{CommandError, WireError};
use crate::types::{Attributes, ChannelKey, Message, Region, Uid};

/// The client state machine.
#[derive(Debug)]
pub struct Session {}

type Cmd = Result<RequestId, CommandError>;

impl Session {
    pub fn new(config: SessionConfig, now: Instant) -> Session {
        todo!()
    }
    pub fn handle_connected(&mut self, now: Instant) {
        todo!()
    }
    pub fn handle_disconnected(&mut self, now: Instant) {
        todo!()
    }
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) -> Result<(), WireError> {
        todo!()
    }
    pub fn handle_timeout(&mut self, now: Instant) {
        todo!()
    }
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        todo!()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    pub fn poll_transport(&mut self) -> Option<TransportAction> {
        todo!()
    }
    pub fn connection_state(&self) -> (ConnectionState, ConnectionReason) {
        todo!()
    }
    pub fn uid(&self) -> Option<Uid> {
        todo!()
    }
    pub fn instance_id(&self) -> Option<u64> {
        todo!()
    }
    pub fn config(&self) -> &SessionConfig {
        todo!()
    }

    pub fn login(
        &mut self,
        now: Instant,
        uid: Uid,
        token: Option<String>,
        region: Option<Region>,
    ) -> Cmd {
        todo!()
    }
    pub fn logout(&mut self, now: Instant) -> Cmd {
        todo!()
    }
    pub fn refresh_token(&mut self, now: Instant, token: String) -> Cmd {
        todo!()
    }
    pub fn set_user_region(&mut self, now: Instant, region: Region) -> Cmd {
        todo!()
    }
    pub fn get_instance_info(&mut self, now: Instant) -> Cmd {
        todo!()
    }
    pub fn send_message_to_user(
        &mut self,
        now: Instant,
        receiver: Uid,
        message: Message,
        options: SendOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn query_users_online_status(&mut self, now: Instant, uids: &[Uid]) -> Cmd {
        todo!()
    }

    pub fn create_channel(
        &mut self,
        region: Region,
        channel_id: &str,
    ) -> Result<ChannelHandle, CommandError> {
        todo!()
    }
    pub fn channel_key(&self, channel: ChannelHandle) -> Option<&ChannelKey> {
        todo!()
    }
    pub fn is_joined(&self, channel: ChannelHandle) -> bool {
        todo!()
    }
    pub fn join_channel(&mut self, now: Instant, channel: ChannelHandle, extra: Attributes) -> Cmd {
        todo!()
    }
    pub fn leave_channel(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        extra: Attributes,
    ) -> Cmd {
        todo!()
    }
    pub fn send_message_to_channel(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        message: Message,
        options: SendOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn set_local_user_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        attributes: Attributes,
        options: AttributeOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn delete_local_user_attributes_by_keys(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        keys: Vec<String>,
        options: AttributeOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn add_or_update_local_user_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        attributes: Attributes,
        options: AttributeOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn clear_local_user_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        options: AttributeOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn get_channel_user_list(&mut self, now: Instant, channel: ChannelHandle) -> Cmd {
        todo!()
    }
    pub fn get_user_attributes(&mut self, now: Instant, channel: ChannelHandle, uid: Uid) -> Cmd {
        todo!()
    }
    pub fn get_user_attributes_by_keys(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        uid: Uid,
        keys: Vec<String>,
    ) -> Cmd {
        todo!()
    }
    pub fn set_channel_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        attributes: Attributes,
        options: AttributeOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn delete_channel_attributes_by_keys(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        keys: Vec<String>,
        options: AttributeOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn add_or_update_channel_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        attributes: Attributes,
        options: AttributeOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn clear_channel_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        options: AttributeOptions,
    ) -> Cmd {
        todo!()
    }
    pub fn get_channel_attributes(&mut self, now: Instant, channel: ChannelHandle) -> Cmd {
        todo!()
    }
    pub fn get_channel_attributes_by_keys(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        keys: Vec<String>,
    ) -> Cmd {
        todo!()
    }
    pub fn get_channel_user_count(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        channel_ids: Vec<String>,
    ) -> Cmd {
        todo!()
    }
    pub fn get_channel_user_list_by_attribute(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        key: String,
        value: String,
    ) -> Cmd {
        todo!()
    }
}
