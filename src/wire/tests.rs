use super::*;
use proptest::prelude::*;

const MAX: u32 = 1 << 20;

fn roundtrip(f: &Frame<'_>) {
    let bytes = f.to_vec();
    let back = Frame::decode_exact(&bytes, MAX).expect("decodes");
    assert_eq!(&back, f);
    let mut reader = FrameReader::new(MAX);
    // Feed one byte at a time: a frame must only appear once complete.
    for (i, b) in bytes.iter().enumerate() {
        reader.buffer_mut(1)[0] = *b;
        reader.filled(1);
        let got = reader.next_frame().expect("valid");
        if i + 1 < bytes.len() {
            assert!(got.is_none(), "frame surfaced early at byte {i}");
        } else {
            assert_eq!(got.as_ref(), Some(f));
        }
    }
}

#[test]
fn send_frame_has_the_documented_layout() {
    let f = Frame::Send {
        seq: 7,
        ack: true,
        channel: "QPE/System",
        message: "ping()",
        payload: &[0xAB],
    };
    let bytes = f.to_vec();
    let expect: Vec<u8> = [
        &[0, 0, 0, 25][..],  // body length
        &[0x04, 0x01, 0, 0], // kind Send, flag ack, reserved
        &[0, 0, 0, 7],       // seq
        &[0, 10],
        b"QPE/System",
        &[0, 6],
        b"ping()",
        &[0, 0, 0, 1, 0xAB],
    ]
    .concat();
    assert_eq!(bytes, expect);
    roundtrip(&f);
}

#[test]
fn every_kind_roundtrips() {
    let frames = vec![
        Frame::Hello {
            version_min: 1,
            version_max: 3,
            name: "test",
        },
        Frame::Subscribe {
            seq: 1,
            credentials: false,
            channel: "a/*",
        },
        Frame::Unsubscribe {
            seq: 2,
            channel: "a",
        },
        Frame::IsRegistered {
            seq: 3,
            channel: "b",
        },
        Frame::Call {
            seq: 4,
            timeout_ms: 500,
            channel: "svc",
            message: "get()",
            payload: b"",
        },
        Frame::Respond {
            token: 9,
            error: true,
            message: "nope",
            payload: b"x",
        },
        Frame::ListChannels { seq: 5 },
        Frame::Stats {
            seq: 6,
            clients: true,
        },
        Frame::Sync { seq: 7 },
        Frame::Welcome {
            version: 1,
            client_id: 3,
            max_payload: 65536,
            max_channel: 255,
            max_message: 255,
            max_subscriptions: 1024,
        },
        Frame::Ok { seq: 1, value: 2 },
        Frame::Error {
            seq: 0,
            fatal: true,
            code: ErrorCode::SlowConsumer,
            text: "bye",
        },
        Frame::Message {
            token: 0,
            call: false,
            channel: "c",
            message: "m(int)",
            payload: &[0, 0, 0, 1],
            sender: None,
        },
        Frame::Reply {
            seq: 4,
            error: false,
            message: "r()",
            payload: b"",
        },
        Frame::Registered {
            seq: 3,
            count: 2,
            remote: 1,
        },
        Frame::Channels {
            seq: 5,
            list: vec![ChannelInfo {
                name: "x/*".into(),
                subscribers: 2,
                pattern: true,
                remote: 3,
            }],
        },
        Frame::StatsReport {
            seq: 6,
            report: StatsReport {
                counters: vec![("clients".into(), 3)],
                clients: vec![ClientInfo {
                    id: 1,
                    pid: 2,
                    uid: 3,
                    gid: 4,
                    subscriptions: 5,
                    queued_bytes: 6,
                    delivered: 7,
                    dropped: 8,
                    name: "n".into(),
                }],
                links: vec![LinkInfo {
                    peer: "10.0.0.2:4250".into(),
                    name: "board".into(),
                    state: "up".into(),
                    counters: vec![("rtt_us".into(), 250)],
                }],
            },
        },
        Frame::Lost { count: 12 },
    ];
    for f in &frames {
        roundtrip(f);
    }
}

#[test]
fn shared_memory_frames_roundtrip_and_only_answers_carry_descriptors() {
    let requests = [
        Frame::ShmOpen {
            seq: 3,
            policy: 1,
            slot_size: 64,
            slot_count: 1024,
            channel: "sensors/imu",
            message: "sample(int)",
        },
        Frame::ShmEventFd { seq: 4, stream: 9 },
        Frame::ShmMap {
            seq: 5,
            channel: "sensors/imu",
        },
    ];
    let answers = [
        Frame::ShmStream { seq: 3, stream: 9 },
        Frame::ShmEvent { seq: 4 },
        Frame::ShmMapped {
            seq: 5,
            stream: 9,
            record: 2,
            message: "sample(int)",
        },
    ];
    for f in requests.iter().chain(&answers) {
        roundtrip(f);
        let mut bytes = f.to_vec();
        assert_eq!(bytes[5] & FLAG_FD != 0, f.kind().carries_fd(), "{f:?}");
        // The FD flag must match the kind exactly.
        bytes[5] ^= FLAG_FD;
        assert!(Frame::decode_exact(&bytes, MAX).is_err(), "{f:?}");
    }
    assert!(answers.iter().all(|f| f.kind().carries_fd()));
    assert!(requests.iter().all(|f| !f.kind().carries_fd()));
    for code in 24..=29 {
        let c = ErrorCode::from_u16(code);
        assert!(!matches!(c, ErrorCode::Unknown(_)));
        assert_eq!(c.to_u16(), code);
    }
}

#[test]
fn oversized_body_is_rejected_from_the_header_alone() {
    let mut bytes = Frame::Sync { seq: 1 }.to_vec();
    bytes[0..4].copy_from_slice(&(MAX + 1).to_be_bytes());
    let mut r = FrameReader::new(MAX);
    r.buffer_mut(HEADER_LEN)[..HEADER_LEN].copy_from_slice(&bytes[..HEADER_LEN]);
    r.filled(HEADER_LEN);
    assert_eq!(
        r.next_frame().unwrap_err(),
        DecodeError::TooLarge {
            len: MAX + 1,
            max: MAX
        }
    );
}

#[test]
fn bad_header_fields_are_errors() {
    let good = Frame::Sync { seq: 1 }.to_vec();
    let mut b = good.clone();
    b[4] = 0x7f;
    assert_eq!(
        Frame::decode_exact(&b, MAX),
        Err(DecodeError::UnknownKind(0x7f))
    );
    let mut b = good.clone();
    b[5] = 0x02;
    assert!(matches!(
        Frame::decode_exact(&b, MAX),
        Err(DecodeError::UnknownFlags { .. })
    ));
    let mut b = good;
    b[7] = 1;
    assert_eq!(Frame::decode_exact(&b, MAX), Err(DecodeError::Reserved));
}

#[test]
fn bad_utf8_and_magic_and_trailing_bytes() {
    let mut b = Frame::Subscribe {
        seq: 1,
        credentials: false,
        channel: "ab",
    }
    .to_vec();
    b[HEADER_LEN + 2] = 0xff;
    assert_eq!(Frame::decode_exact(&b, MAX), Err(DecodeError::BadUtf8));

    let mut b = Frame::Hello {
        version_min: 1,
        version_max: 1,
        name: "",
    }
    .to_vec();
    b[HEADER_LEN] = b'X';
    assert_eq!(Frame::decode_exact(&b, MAX), Err(DecodeError::BadMagic));

    let mut b = Frame::Sync { seq: 1 }.to_vec();
    b.push(0);
    b[3] = 1;
    assert_eq!(
        Frame::decode_exact(&b, MAX),
        Err(DecodeError::TrailingBytes)
    );
}

/// The remote counts and the links section travel only when they say something: answers
/// without them (all a daemon without links sends) decode with zeros and an empty list, and
/// an explicit zero or empty section is refused, so every answer has exactly one encoding.
#[test]
fn link_fields_travel_only_when_nonzero() {
    let registered = |remote| Frame::Registered {
        seq: 3,
        count: 2,
        remote,
    };
    let short = registered(0).to_vec();
    let long = registered(5).to_vec();
    assert_eq!(long.len(), short.len() + 4);
    assert_eq!(Frame::decode_exact(&short, MAX), Ok(registered(0)));
    assert_eq!(Frame::decode_exact(&long, MAX), Ok(registered(5)));
    let mut zero = long.clone();
    let n = zero.len();
    zero[n - 4..].fill(0);
    assert_eq!(Frame::decode_exact(&zero, MAX), Err(DecodeError::Reserved));

    let entry = |remote| ChannelInfo {
        name: "a".into(),
        subscribers: 1,
        pattern: false,
        remote,
    };
    let channels = |remote| Frame::Channels {
        seq: 1,
        list: vec![entry(remote)],
    };
    let short = channels(0).to_vec();
    let long = channels(7).to_vec();
    assert_eq!(long.len(), short.len() + 8);
    assert_eq!(Frame::decode_exact(&short, MAX), Ok(channels(0)));
    assert_eq!(Frame::decode_exact(&long, MAX), Ok(channels(7)));
    let mut zero = long.clone();
    let n = zero.len();
    zero[n - 4..].fill(0);
    assert_eq!(Frame::decode_exact(&zero, MAX), Err(DecodeError::Reserved));

    let report = |links| StatsReport {
        counters: vec![("clients".into(), 1)],
        clients: vec![],
        links,
    };
    let b = Frame::StatsReport {
        seq: 2,
        report: report(vec![]),
    }
    .to_vec();
    assert_eq!(
        Frame::decode_exact(&b, MAX),
        Ok(Frame::StatsReport {
            seq: 2,
            report: report(vec![])
        })
    );
    // An explicit empty links section.
    let mut empty = b.clone();
    empty.extend_from_slice(&[0, 0, 0, 0]);
    empty[3] += 4;
    assert_eq!(Frame::decode_exact(&empty, MAX), Err(DecodeError::Reserved));
}

#[test]
fn raw_frames_are_split_by_length_only() {
    let mut bytes = Frame::Sync { seq: 1 }.to_vec();
    // An unknown kind is not the raw reader's business.
    bytes[4] = 0x45;
    bytes.extend_from_slice(&[0, 0, 0, 9, 0x41, 0, 0, 0, 0, 0, 0, 0]);
    let mut r = FrameReader::new(8);
    r.buffer_mut(bytes.len())[..bytes.len()].copy_from_slice(&bytes);
    r.filled(bytes.len());
    assert_eq!(r.next_raw().unwrap().map(|f| f.len()), Some(HEADER_LEN));
    assert_eq!(r.next_raw(), Err(DecodeError::TooLarge { len: 9, max: 8 }));
}

#[test]
fn hostile_counts_do_not_allocate() {
    let mut b = Frame::Channels {
        seq: 1,
        list: vec![],
    }
    .to_vec();
    b[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(Frame::decode_exact(&b, MAX), Err(DecodeError::BadCount));
}

#[test]
fn reader_keeps_partial_frames_across_compaction() {
    let a = Frame::Sync { seq: 1 }.to_vec();
    let b = Frame::Subscribe {
        seq: 2,
        credentials: false,
        channel: "chan",
    }
    .to_vec();
    let mut stream = a.clone();
    stream.extend_from_slice(&b[..5]);
    let mut r = FrameReader::new(MAX);
    r.buffer_mut(stream.len())[..stream.len()].copy_from_slice(&stream);
    r.filled(stream.len());
    assert_eq!(r.next_frame().unwrap(), Some(Frame::Sync { seq: 1 }));
    assert_eq!(r.next_frame().unwrap(), None);
    let rest = &b[5..];
    r.buffer_mut(rest.len())[..rest.len()].copy_from_slice(rest);
    r.filled(rest.len());
    assert_eq!(
        r.next_frame().unwrap(),
        Some(Frame::Subscribe {
            seq: 2,
            credentials: false,
            channel: "chan"
        })
    );
    assert_eq!(r.pending(), 0);
}

fn arb_frame() -> impl Strategy<Value = (u8, u32, bool, String, String, Vec<u8>)> {
    (
        0u8..8,
        any::<u32>(),
        any::<bool>(),
        "\\PC{0,40}",
        "\\PC{0,40}",
        proptest::collection::vec(any::<u8>(), 0..300),
    )
}

proptest! {
    #[test]
    fn encode_decode_roundtrip((pick, seq, flag, a, b, payload) in arb_frame()) {
        let f = match pick {
            0 => Frame::Send { seq, ack: flag, channel: &a, message: &b, payload: &payload },
            1 => Frame::Message { token: seq, call: flag, channel: &a, message: &b, payload: &payload, sender: flag.then_some(Credentials { pid: seq, uid: seq ^ 1, gid: 7 }) },
            2 => Frame::Call { seq, timeout_ms: seq ^ 5, channel: &a, message: &b, payload: &payload },
            3 => Frame::Reply { seq, error: flag, message: &b, payload: &payload },
            4 => Frame::Error { seq, fatal: flag, code: ErrorCode::from_u16(seq as u16), text: &a },
            5 => Frame::Subscribe { seq, credentials: flag, channel: &a },
            6 => Frame::Hello { version_min: seq as u16, version_max: (seq >> 16) as u16, name: &a },
            _ => Frame::Channels { seq, list: vec![ChannelInfo { name: a.clone(), subscribers: seq, pattern: flag, remote: seq ^ 1 }] },
        };
        let bytes = f.to_vec();
        prop_assert_eq!(Frame::decode_exact(&bytes, MAX), Ok(f));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Frame::decode_exact(&bytes, MAX);
        let mut r = FrameReader::new(256);
        r.buffer_mut(bytes.len())[..bytes.len()].copy_from_slice(&bytes);
        r.filled(bytes.len());
        while let Ok(Some(_)) = r.next_frame() {}
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        (pick, seq, flag, a, b, payload) in arb_frame(),
        at in any::<usize>(), val in any::<u8>(),
    ) {
        let f = match pick % 2 {
            0 => Frame::Send { seq, ack: flag, channel: &a, message: &b, payload: &payload },
            _ => Frame::StatsReport { seq, report: StatsReport { counters: vec![(a.clone(), 1)], clients: vec![], links: vec![] } },
        };
        let mut bytes = f.to_vec();
        let i = at % bytes.len();
        bytes[i] = val;
        let _ = Frame::decode_exact(&bytes, MAX);
    }
}

proptest::proptest! {
    /// A `Message` built from a `Send`'s (or a `Call`'s) encoded fields is the `Message`
    /// `encode` makes, and a reader gets its body back with it.
    #[test]
    fn a_message_from_send_fields_is_the_encoded_message(
        channel in "\\PC{1,12}",
        message in "\\PC{1,12}",
        payload in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        token in 0u32..3,
        creds in proptest::option::of((0u32..9, 0u32..9, 0u32..9)),
    ) {
        let send = Frame::Send { seq: 7, ack: true, channel: &channel, message: &message, payload: &payload };
        let bytes = send.to_vec();
        let mut r = FrameReader::new(1 << 16);
        r.buffer_mut(bytes.len())[..bytes.len()].copy_from_slice(&bytes);
        r.filled(bytes.len());
        let (_, body) = r.next_frame_and_body().unwrap().unwrap();
        proptest::prop_assert_eq!(body, &bytes[HEADER_LEN..]);
        let sender = creds.map(|(pid, uid, gid)| Credentials { pid, uid, gid });
        let mut out = Vec::new();
        Frame::encode_message_fields(&mut out, token, token != 0, body, sender);
        let want = Frame::Message {
            token,
            call: token != 0,
            channel: &channel,
            message: &message,
            payload: &payload,
            sender,
        }
        .to_vec();
        proptest::prop_assert_eq!(out, want);
    }
}
