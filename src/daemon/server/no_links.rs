//! The event loop's link hooks in a build without the `links` feature: there are no links,
//! so every hook does nothing. (The real ones are in `links.rs`.)

use super::{PendingCall, Server};
use crate::daemon::config::LinkConfig;
use crate::wire::{ChannelInfo, LinkInfo};
use nix::sys::epoll::EpollFlags;
use std::time::Instant;

/// Tokens from here on would be links' (none is ever registered).
pub(super) const LISTENER_TOKEN: u64 = 1 << 48;

/// The link layer of a build without links.
pub(super) struct Links;

impl Links {
    pub(super) fn new(_: &LinkConfig) -> Result<Links, String> {
        Ok(Links)
    }
}

/// Calls never come over a link here.
#[derive(Debug, Clone, Copy)]
pub(super) enum RemoteCaller {}

impl Server {
    pub(super) fn links_register(&mut self) -> Result<(), String> {
        Ok(())
    }

    pub(super) fn link_event(&mut self, _: u64, _: EpollFlags) {}

    pub(super) fn links_next_deadline(&self) -> Option<Instant> {
        None
    }

    pub(super) fn links_turn(&mut self) {}

    pub(super) fn links_subscriptions_changed(&mut self) {}

    pub(super) fn links_shutdown(&mut self) {}

    pub(super) fn links_publish(&mut self, _: &str, _: &str, _: &[u8]) -> u32 {
        0
    }

    pub(super) fn links_call(&mut self, _: u32, _: u32, _: &str, _: &str, _: &[u8]) -> Vec<usize> {
        Vec::new()
    }

    pub(super) fn links_have_responder(&self, _: &str) -> bool {
        false
    }

    pub(super) fn links_registered(&self, _: &str) -> u32 {
        0
    }

    pub(super) fn links_channels(&self, local: Vec<(String, u32, bool)>) -> Vec<ChannelInfo> {
        local
            .into_iter()
            .map(|(name, subscribers, pattern)| ChannelInfo {
                name,
                subscribers,
                pattern,
                remote: 0,
            })
            .collect()
    }

    pub(super) fn links_report(&self) -> (Vec<(String, u64)>, Vec<LinkInfo>) {
        (Vec::new(), Vec::new())
    }

    pub(super) fn link_reply_out(&mut self, _: &PendingCall, _: bool, _: &str, _: &[u8]) {}

    pub(super) fn link_call_released(&mut self, r: RemoteCaller) {
        match r {}
    }

    pub(super) fn link_call_gone(&mut self, r: RemoteCaller, _: bool) {
        match r {}
    }
}
