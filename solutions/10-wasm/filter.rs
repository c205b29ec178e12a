// Lab 10 — a proxy-wasm filter, solved: it masks card numbers, e-mail addresses and
// phone numbers in text and JSON response bodies (the specification is in README.md).
//
// These two lines are the same with the `proxy-wasm` crate: the course builds this
// file against its own module (proxy_wasm/), which has the crate's names.
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn RootContext> { Box::new(PiiRoot) });
}}

/// One per plugin: makes a PiiMask for every HTTP stream.
struct PiiRoot;

impl Context for PiiRoot {}

impl RootContext for PiiRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(PiiMask { inspect: false }))
    }
}

/// One per HTTP stream.
struct PiiMask {
    inspect: bool, // a text or JSON body follows: mask it
}

impl Context for PiiMask {}

impl HttpContext for PiiMask {
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Step 3: only text and JSON bodies; binary ones pass untouched.
        let content_type = self.get_http_response_header("content-type").unwrap_or_default();
        self.inspect = !end_of_stream && is_text(&content_type);
        if self.inspect {
            // The body will change length, and these headers leave for the client as
            // soon as this callback returns: the old content-length must go now.
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.inspect {
            return Action::Continue;
        }
        // Step 4: Pause until the last chunk, so Envoy keeps every chunk; a number split
        // across two chunks is then whole. (Past the buffer limit Envoy ends the
        // response itself, before any of the body left.)
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_response_body(0, body_size).unwrap_or_default();
        let (masked, count) = mask(&body);
        self.set_http_response_body(0, body_size, &masked);
        // The headers are gone by now: the count travels as a trailer.
        self.add_http_response_trailer("x-pii-masked", &count.to_string());
        Action::Continue
    }
}

/// text/*, application/json and any +json type (application/problem+json).
fn is_text(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media.starts_with("text/") || media == "application/json" || media.ends_with("+json")
}

// Step 2: the masking, in three passes as the specification orders them.

/// BODY with every e-mail address, phone number and card number masked, and how many.
fn mask(body: &[u8]) -> (Vec<u8>, usize) {
    let (body, emails) = mask_emails(body);
    let (body, phones) = mask_phones(&body);
    let (body, cards) = mask_cards(&body);
    (body, emails + phones + cards)
}

fn is_local_part(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"._%+-".contains(&byte)
}

/// The local part (a run of letters, digits and ._%+-) right before an @ that is
/// followed by a letter or digit becomes ***.
fn mask_emails(text: &[u8]) -> (Vec<u8>, usize) {
    let (mut out, mut count, mut i) = (Vec::with_capacity(text.len()), 0, 0);
    while i < text.len() {
        if !is_local_part(text[i]) {
            out.push(text[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && is_local_part(text[i]) {
            i += 1;
        }
        if i + 1 < text.len() && text[i] == b'@' && text[i + 1].is_ascii_alphanumeric() {
            out.extend_from_slice(b"***");
            count += 1;
        } else {
            out.extend_from_slice(&text[start..i]);
        }
    }
    (out, count)
}

/// A + and then digits, single spaces or hyphens allowed between two digits, 8 to 15
/// digits in all, becomes [phone].
fn mask_phones(text: &[u8]) -> (Vec<u8>, usize) {
    let (mut out, mut count, mut i) = (Vec::with_capacity(text.len()), 0, 0);
    while i < text.len() {
        if !(text[i] == b'+' && i + 1 < text.len() && text[i + 1].is_ascii_digit()) {
            out.push(text[i]);
            i += 1;
            continue;
        }
        let (start, mut digits) = (i, 0);
        i += 1;
        loop {
            digits += 1; // text[i] is a digit
            i += 1;
            if i < text.len() && text[i].is_ascii_digit() {
                continue;
            }
            if i + 1 < text.len() && (text[i] == b' ' || text[i] == b'-') && text[i + 1].is_ascii_digit() {
                i += 1;
                continue;
            }
            break;
        }
        if (8..=15).contains(&digits) {
            out.extend_from_slice(b"[phone]");
            count += 1;
        } else {
            out.extend_from_slice(&text[start..i]);
        }
    }
    (out, count)
}

/// A run of 13 to 19 digits (no digit right before or after) that passes the Luhn
/// check keeps its last four digits; the others become *.
fn mask_cards(text: &[u8]) -> (Vec<u8>, usize) {
    let (mut out, mut count, mut i) = (Vec::with_capacity(text.len()), 0, 0);
    while i < text.len() {
        if !text[i].is_ascii_digit() {
            out.push(text[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
        let run = &text[start..i];
        if (13..=19).contains(&run.len()) && luhn(run) {
            out.extend(std::iter::repeat(b'*').take(run.len() - 4));
            out.extend_from_slice(&run[run.len() - 4..]);
            count += 1;
        } else {
            out.extend_from_slice(run);
        }
    }
    (out, count)
}

/// From the right, double every second digit (minus 9 above 9); valid when the sum
/// ends in 0.
fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0;
    for (position, byte) in digits.iter().rev().enumerate() {
        let mut digit = (byte - b'0') as u32;
        if position % 2 == 1 {
            digit *= 2;
            if digit > 9 {
                digit -= 9;
            }
        }
        sum += digit;
    }
    sum % 10 == 0
}
