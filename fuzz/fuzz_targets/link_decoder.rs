//! Feeds arbitrary bytes, split into arbitrary chunks, through the frame splitter and the
//! decoder of the daemon-to-daemon link protocol, and re-encodes whatever decodes: nothing
//! may panic, and a decoded frame must encode back to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcop::daemon::link::proto::LinkFrame;
use qcop::wire::FrameReader;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 64) + 1;
    let mut reader = FrameReader::new(4096);
    for piece in bytes.chunks(chunk) {
        reader.buffer_mut(piece.len())[..piece.len()].copy_from_slice(piece);
        reader.filled(piece.len());
        loop {
            match reader.next_raw() {
                Ok(Some(raw)) => {
                    if let Ok(frame) = LinkFrame::decode(raw) {
                        assert_eq!(frame.to_vec(), raw);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
