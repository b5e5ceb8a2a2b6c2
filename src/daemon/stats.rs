//! The daemon's counters, reported by `qcop stats`.

/// Counters since the daemon started. Gauges (current values) are filled in when a report
/// is built.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Connections accepted.
    pub clients_accepted: u64,
    /// Connections refused because the client limit was reached.
    pub clients_refused: u64,
    /// Of those, connections refused because their user reached `max_clients_per_user`.
    pub clients_refused_per_user: u64,
    /// `accept` calls that failed (out of descriptors or memory); the listener then pauses.
    pub accept_failures: u64,
    /// Connections closed for protocol errors (malformed frames, bad handshake).
    pub protocol_errors: u64,
    /// Connections dropped because a partial frame went over the user's share of the memory
    /// budget or over the budget itself.
    pub clients_dropped_input_budget: u64,
    /// Connections dropped because a partial frame was not completed within
    /// `partial_frame_timeout_ms`.
    pub clients_dropped_partial_timeout: u64,
    /// Connections closed because they never completed the handshake.
    pub handshake_timeouts: u64,
    /// Messages received from senders (sends and calls).
    pub messages_received: u64,
    /// Copies of messages queued for receivers.
    pub messages_delivered: u64,
    /// Messages sent to a channel nobody was subscribed to.
    pub dropped_no_subscriber: u64,
    /// Messages dropped for a receiver whose queue was full (drop-oldest policy).
    pub dropped_slow_consumer: u64,
    /// Messages dropped for a receiver because the daemon-wide queue budget was exhausted.
    pub dropped_memory_budget: u64,
    /// Queued messages discarded with receivers disconnected as slow consumers.
    pub dropped_disconnected: u64,
    /// Receivers disconnected by the disconnect slow-consumer policy.
    pub slow_consumer_disconnects: u64,
    /// Requests refused with an error (bad name, too large, wildcard send, limits).
    pub requests_rejected: u64,
    /// Subscriptions refused because their user reached `max_subscriptions_per_user` or
    /// `max_patterns_per_user` (also counted in `requests_rejected`).
    pub subscriptions_refused_per_user: u64,
    /// Calls started.
    pub calls: u64,
    /// Calls answered by a responder.
    pub calls_answered: u64,
    /// Calls that timed out.
    pub calls_timed_out: u64,
    /// Calls that found no responder.
    pub calls_no_responder: u64,
    /// Calls whose responders all disconnected without answering.
    pub calls_responder_gone: u64,
    /// Replies that matched no pending call (late, duplicate, or not addressed to the sender).
    pub replies_unmatched: u64,
    /// Configuration reloads that succeeded.
    pub reloads: u64,
    /// Configuration reloads that failed (old configuration kept).
    pub reload_failures: u64,
    /// Largest number of bytes queued for all clients at once.
    pub bytes_queued_peak: u64,
}

/// Gauges sampled when a report is built.
pub struct Gauges {
    /// Connected clients.
    pub clients: u64,
    /// Channels with exact subscribers.
    pub channels: u64,
    /// Distinct patterns.
    pub patterns: u64,
    /// Subscriptions of all clients.
    pub subscriptions: u64,
    /// Calls waiting for a reply.
    pub calls_pending: u64,
    /// Bytes queued for all clients.
    pub bytes_queued: u64,
    /// Bytes of read buffers holding partial frames.
    pub bytes_partial_input: u64,
    /// Seconds since start.
    pub uptime_s: u64,
}

impl Counters {
    /// Every counter and gauge as `(name, value)`, in the order `qcop stats` prints them.
    pub fn report(&self, g: &Gauges) -> Vec<(String, u64)> {
        let rows: [(&str, u64); 34] = [
            ("clients", g.clients),
            ("clients_accepted", self.clients_accepted),
            ("clients_refused", self.clients_refused),
            ("clients_refused_per_user", self.clients_refused_per_user),
            ("accept_failures", self.accept_failures),
            ("protocol_errors", self.protocol_errors),
            ("handshake_timeouts", self.handshake_timeouts),
            (
                "clients_dropped_input_budget",
                self.clients_dropped_input_budget,
            ),
            (
                "clients_dropped_partial_timeout",
                self.clients_dropped_partial_timeout,
            ),
            ("channels", g.channels),
            ("patterns", g.patterns),
            ("subscriptions", g.subscriptions),
            ("messages_received", self.messages_received),
            ("messages_delivered", self.messages_delivered),
            ("dropped_no_subscriber", self.dropped_no_subscriber),
            ("dropped_slow_consumer", self.dropped_slow_consumer),
            ("dropped_memory_budget", self.dropped_memory_budget),
            ("dropped_disconnected", self.dropped_disconnected),
            ("slow_consumer_disconnects", self.slow_consumer_disconnects),
            ("requests_rejected", self.requests_rejected),
            (
                "subscriptions_refused_per_user",
                self.subscriptions_refused_per_user,
            ),
            ("calls", self.calls),
            ("calls_pending", g.calls_pending),
            ("calls_answered", self.calls_answered),
            ("calls_timed_out", self.calls_timed_out),
            ("calls_no_responder", self.calls_no_responder),
            ("calls_responder_gone", self.calls_responder_gone),
            ("replies_unmatched", self.replies_unmatched),
            ("bytes_queued", g.bytes_queued),
            ("bytes_queued_peak", self.bytes_queued_peak),
            ("bytes_partial_input", g.bytes_partial_input),
            ("reloads", self.reloads),
            ("reload_failures", self.reload_failures),
            ("uptime_s", g.uptime_s),
        ];
        rows.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }
}
