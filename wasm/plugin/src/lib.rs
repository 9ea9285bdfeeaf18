//! BOIFI's proxy-wasm HTTP filter: injects the aborts and delays that policies declare, for the
//! workloads they select, inside each Envoy sidecar.
//!
//! Pure, natively tested logic:
//! - [`config`]: the plugin configuration (JSON), checked, with defaults.
//! - [`identity`]: the workload from Envoy node metadata.
//! - [`vm`]: one VM's state and what it does on each host event (configure, tick, poll
//!   answer, request callbacks), over the [`host::Host`] trait.
//! - [`decide`]: the per-request decision over a [`decide::PolicySet`].
//! - [`request`]: the request as rules read it, fetched from Envoy only as far as they get.
//! - [`poll`]: the long-poll client for the sse-broadcaster, with backoff and jitter; the
//!   query and snapshot format are `boifi_policy::wire`, shared with the broadcaster.
//! - [`lease`]: one poll per Envoy: the lease that elects the polling VM, and the snapshot it
//!   shares with the others in shared data.
//! - [`applied`]: the revision each VM applies, so the polling VM reports a revision as
//!   enforced only once every VM has it.
//! - [`holds`]: requests held by delays, by deadline.
//! - [`metrics`]: stat names; [`rng`]: the per-VM random source.
//!
//! Host glue: [`host`] (every host call, none unwrapping; [`host::Envoy`] implements
//! [`host::Host`]) and the root and HTTP contexts below, which only forward to [`vm::Vm`].
//! Everything fails open: a bad configuration, an unreachable broadcaster or a failed host call
//! lets traffic through untouched.
//!
//! One VM, hence one root context, runs per Envoy worker thread (plus one on the main thread),
//! each with its own state. Only the VM holding the lease polls the broadcaster; it publishes
//! each snapshot in shared data, where the others pick it up on their tick.

#![forbid(unsafe_code)]

pub mod applied;
pub mod config;
pub mod decide;
pub mod holds;
pub mod host;
pub mod identity;
pub mod lease;
pub mod metrics;
pub mod poll;
pub mod report;
pub mod request;
pub mod rng;
#[cfg(test)]
mod test_support;
pub mod vm;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::host::Envoy;
use crate::vm::{RequestState, Vm};

pub use crate::vm::FAULT_HEADER;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root {
            vm: Rc::new(RefCell::new(Vm::new(Envoy, context_id))),
        })
    });
}}

/// The root context: configuration, tick and poll answers, all handed to the VM.
struct Root {
    vm: Rc<RefCell<Vm<Envoy>>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.vm.borrow_mut().on_poll_response(token_id, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        if let Some(level) = host::log_level() {
            proxy_wasm::set_log_level(level);
        }
        let bytes = host::plugin_configuration(plugin_configuration_size);
        self.vm
            .borrow_mut()
            .configure(bytes.as_deref(), || identity::resolve(host::property))
    }

    fn on_tick(&mut self) {
        self.vm.borrow_mut().on_tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            vm: Rc::clone(&self.vm),
            state: RequestState::new(context_id),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP request/response; its state lives here, its logic in the VM.
struct Request {
    vm: Rc<RefCell<Vm<Envoy>>>,
    state: RequestState,
}

impl Context for Request {
    fn on_done(&mut self) -> bool {
        self.vm.borrow_mut().on_request_done(&self.state);
        true
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.vm
            .borrow_mut()
            .on_request_headers(&mut self.state, host::RequestHeaders)
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.vm.borrow().on_request_data(&self.state)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.vm.borrow().on_request_data(&self.state)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.vm.borrow_mut().on_response_headers(&self.state)
    }
}
