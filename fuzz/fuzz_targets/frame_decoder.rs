//! Feeds arbitrary bytes, split into arbitrary chunks, through the frame reader the daemon
//! and the library use, and re-encodes whatever decodes: nothing may panic, and a decoded
//! frame must encode back to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcop::wire::{Frame, FrameReader, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 64) + 1;
    let mut reader = FrameReader::new(4096);
    let mut consumed = 0usize;
    for piece in bytes.chunks(chunk) {
        reader.buffer_mut(piece.len())[..piece.len()].copy_from_slice(piece);
        reader.filled(piece.len());
        loop {
            let before = reader.pending();
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    let encoded = frame.to_vec();
                    let len = before - reader.pending();
                    assert!(len >= HEADER_LEN);
                    assert_eq!(&encoded[..], &bytes[consumed..consumed + len]);
                    consumed += len;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
