//! Feeds arbitrary bytes, split into arbitrary chunks, through the frame splitter and the
//! decoder of the daemon-to-daemon link protocol, and re-encodes whatever decodes: nothing
//! may panic, and a decoded frame must encode back to the bytes it came from. Each frame is
//! also handed to a session's record opener (as after the handshake): it must refuse
//! without panicking, and what it opens goes through the decoder too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcop::daemon::link::proto::LinkFrame;
use qcop::daemon::link::seal::{split_frame, Opener, Protection, Sealer};
use qcop::wire::FrameReader;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 64) + 1;
    let mut reader = FrameReader::new(4096);
    let mut opener = Opener::new(&[7; 32]);
    let mut scratch = Vec::new();
    // Half the inputs start with a genuine record, so that the opener's counter moves on.
    if split & 0x80 != 0 {
        let mut record = Vec::new();
        Sealer::new(&[7; 32], Protection::Integrity)
            .seal(&LinkFrame::Ping { stamp: 1 }.to_vec(), &mut record)
            .unwrap();
        assert!(opener.open(&record, &mut scratch).is_ok());
    }
    for piece in bytes.chunks(chunk) {
        reader.buffer_mut(piece.len())[..piece.len()].copy_from_slice(piece);
        reader.filled(piece.len());
        loop {
            match reader.next_raw() {
                Ok(Some(raw)) => {
                    if let Ok(frame) = LinkFrame::decode(raw) {
                        assert_eq!(frame.to_vec(), raw);
                    }
                    if let Ok(mut inner) = opener.open(raw, &mut scratch) {
                        while let Some((frame, rest)) = split_frame(inner) {
                            let _ = LinkFrame::decode(frame);
                            inner = rest;
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
