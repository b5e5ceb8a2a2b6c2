//! The event loop's side of activation: messages for a service whose channel has no
//! subscriber go to [`Activation`](crate::daemon::activate::Activation), queued messages
//! come back to be routed when the service subscribes, and callers of calls that are
//! dropped get their error here.

use super::{PendingCall, Server, Slot};
use crate::daemon::activate::{Dropped, Queued, QueuedCall};
use crate::daemon::names::SystemNames;
use crate::wire::{Credentials, Frame};
use std::time::Instant;

impl Server {
    /// The service to queue a message on `channel` for: one whose channel matches, while
    /// nobody is subscribed exactly to `channel` (pattern subscribers such as a `qcop
    /// watch '*'` do not keep a service from being started).
    pub(super) fn service_for(&self, channel: &str) -> Option<usize> {
        if self.activation.is_empty() || self.router.exact_count(channel) > 0 {
            return None;
        }
        self.activation.find(channel)
    }

    /// Queues a send for a service (starting it if needed).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_send(
        &mut self,
        slot: Slot,
        seq: u32,
        ack: bool,
        service: usize,
        sender: Credentials,
        channel: &str,
        message: &str,
        payload: &[u8],
    ) {
        let item = Queued::new(channel, message, payload, sender, None);
        match self.activation.offer(service, item, Instant::now()) {
            Ok(()) if ack => self.reply(slot, &Frame::Ok { seq, value: 0 }),
            Ok(()) => {}
            Err(r) => self.reject(slot, seq, r.code, &r.text),
        }
    }

    /// Queues a call for a service; the caller's answer comes when it is routed or dropped.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_call(
        &mut self,
        call: PendingCall,
        deadline: Instant,
        service: usize,
        sender: Credentials,
        channel: &str,
        message: &str,
        payload: &[u8],
    ) {
        let queued = QueuedCall {
            caller: call.caller,
            caller_id: call.caller_id,
            seq: call.seq,
            deadline,
        };
        let item = Queued::new(channel, message, payload, sender, Some(queued));
        if let Err(r) = self.activation.offer(service, item, Instant::now()) {
            self.counters.requests_rejected += 1;
            self.call_error(&call, r.code, &r.text);
        }
    }

    /// After a subscription to `name`: routes, in order, the queues of the services that
    /// were waiting for it.
    pub(super) fn deliver_queued(&mut self, name: &str) {
        if self.activation.is_empty() {
            return;
        }
        for item in self.activation.on_subscribe(name) {
            match item.call {
                None => {
                    let routed =
                        self.publish(item.sender, &item.channel, &item.message, &item.payload);
                    if routed.is_none() {
                        self.counters.dropped_no_subscriber += 1;
                    }
                }
                Some(c) if self.caller_alive(&c) => {
                    let call = pending(&c);
                    self.route_call(
                        call,
                        c.deadline,
                        item.sender,
                        &item.channel,
                        &item.message,
                        &item.payload,
                        None,
                    );
                }
                // The caller left while the service started: nobody to answer.
                Some(_) => {}
            }
        }
    }

    fn caller_alive(&self, c: &QueuedCall) -> bool {
        self.clients
            .get(c.caller)
            .and_then(Option::as_ref)
            .is_some_and(|client| client.id == c.caller_id)
    }

    /// Tells the callers of dropped queued calls why.
    fn answer_dropped(&mut self, dropped: Vec<Dropped>) {
        for d in dropped {
            if let Some(c) = d.item.call {
                self.call_error(&pending(&c), d.code, &d.text);
            }
        }
    }

    /// Services that missed their deadline, calls whose caller stopped waiting.
    pub(super) fn expire_services(&mut self) {
        if self.activation.is_empty() {
            return;
        }
        let dropped = self.activation.expire(Instant::now());
        self.answer_dropped(dropped);
    }

    /// After SIGCHLD.
    pub(super) fn reap_services(&mut self) {
        let dropped = self.activation.reap(Instant::now());
        self.answer_dropped(dropped);
    }

    /// At start-up: spooled messages of persistent services, and their start.
    pub(super) fn restore_services(&mut self) {
        let dropped = self.activation.restore(Instant::now());
        self.answer_dropped(dropped);
    }

    /// After a configuration reload.
    pub(super) fn reload_services(&mut self) {
        match self.activation.reconfigure(&self.cfg, &SystemNames) {
            Ok(dropped) => self.answer_dropped(dropped),
            Err(e) => log::error!("services not reloaded, keeping the previous ones: {e}"),
        }
    }

    /// Appends the activation counters to a stats report.
    pub(super) fn append_service_stats(&self, rows: &mut Vec<(String, u64)>) {
        rows.extend(
            self.activation
                .counters
                .report()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v)),
        );
    }
}

/// The pending-call record `finish_call` needs to answer a queued call's caller.
fn pending(c: &QueuedCall) -> PendingCall {
    PendingCall {
        caller: c.caller,
        caller_id: c.caller_id,
        seq: c.seq,
        recipients: Vec::new(),
        channel: None,
        links: Vec::new(),
        delivered: false,
        remote: None,
    }
}
