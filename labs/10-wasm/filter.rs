// Lab 10 — a proxy-wasm filter that masks personal data in response bodies.
// The specification (what to mask, and how) is in README.md. meshlab builds this file
// into build/filter.wasm before every start and check (`python3 build.py` does the same).
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
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // TODO(step 3): inspect only text and JSON bodies (is_text of the content-type),
        // and for those, remove content-length here: these headers leave for the client
        // as soon as this callback returns.
        self.inspect = false;
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // TODO(step 4): hold the chunks until the last one (Action::Pause), then read the
        // whole body, mask it, put it back, and add the trailer x-pii-masked: <count>.
        Action::Continue
    }
}

/// text/*, application/json and any +json type (application/problem+json).
fn is_text(_content_type: &str) -> bool {
    // TODO(step 3): look at the media type, before any `;`, ignoring case.
    false
}

/// BODY with every e-mail address, phone number and card number masked, and how many.
#[allow(dead_code)]
fn mask(body: &[u8]) -> (Vec<u8>, usize) {
    // TODO(step 2): three passes, as the specification orders them: e-mails, then
    // phone numbers, then card numbers (with the Luhn check).
    (body.to_vec(), 0)
}
