//! Decodes arbitrary payloads against arbitrary signatures, as `qcop watch` does with what
//! other processes send: errors are fine, panics and runaway allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qcop::datastream::{decode_args, decode_message, parse_signature_lenient};

fuzz_target!(|data: &[u8]| {
    let Some(pos) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (sig, payload) = (&data[..pos], &data[pos + 1..]);
    let Ok(sig) = std::str::from_utf8(sig) else {
        return;
    };
    if let Ok((_, types)) = parse_signature_lenient(sig) {
        if let Some(types) = types.into_iter().collect::<Option<Vec<_>>>() {
            // As `qcop watch` and `wait` read it: one value per type, whatever the bytes.
            let lenient = decode_message(&types, payload);
            assert_eq!(lenient.values.len(), types.len());
            for v in &lenient.values {
                let _ = v.to_string();
            }
            if let Ok(values) = decode_args(&types, payload) {
                let mut out = Vec::new();
                for v in &values {
                    v.encode(&mut out);
                }
                assert_eq!(decode_args(&types, &out).map(|v| v.len()), Ok(values.len()));
            }
        }
    }
});
