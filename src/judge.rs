//! Who is alive, as the caller's options say: the original's judgement with the injected
//! resolver and clock (called synchronously, on this thread, as the original calls them),
//! or the core's kernel-lock and pid judgement with the defaults.

use crate::js::{self, Env, JsResult};
use crate::options::JudgeOptions;
use std::path::Path;
use std::sync::Arc;
use workspace_lock_core::held_lock::wall_clock_ms;
use workspace_lock_core::js_semantics::template_string;
use workspace_lock_core::kernel_lock::{owner_file_for_judging, OwnerFile};
use workspace_lock_core::liveness::{enhanced_judgement, original_verdict, PidProbes, Verdict};
use workspace_lock_core::process_probe::start_time_of;
use workspace_lock_core::record::ParsedRecord;

pub struct Judge<'a> {
    pub env: Env,
    pub opts: &'a JudgeOptions,
    /// Pid lookups shared by the judgements of one call (one sweep, one attempt).
    pub probes: PidProbes,
}

impl<'a> Judge<'a> {
    pub fn new(env: Env, opts: &'a JudgeOptions) -> Judge<'a> {
        Judge {
            env,
            opts,
            probes: PidProbes::default(),
        }
    }

    /// `now()`: the injected clock (which must return a number) or `Date.now()`.
    pub fn now(&self) -> JsResult<f64> {
        let Some(now) = self.opts.now else {
            return Ok(wall_clock_ms());
        };
        let v = js::call(self.env, now, js::undefined(self.env), &[])?;
        if js::type_of(self.env, v) != napi::sys::ValueType::napi_number {
            return Err(js::type_error(format!(
                "opts.now must return a number, received {}",
                js::type_name(self.env, v)
            )));
        }
        Ok(js::get_f64(self.env, v))
    }

    /// The start time of `pid` (a value as read from a lockfile, or our own pid).
    pub fn start_time(&self, pid: Option<&serde_json::Value>) -> JsResult<Option<f64>> {
        let Some(resolver) = self.opts.start_time_resolver else {
            return Ok(start_time_of(&template_string(pid)));
        };
        let arg = js::from_json(self.env, pid)?;
        let v = js::call(self.env, resolver, js::undefined(self.env), &[arg])?;
        match js::type_of(self.env, v) {
            napi::sys::ValueType::napi_undefined => Ok(None),
            napi::sys::ValueType::napi_number => Ok(Some(js::get_f64(self.env, v))),
            _ => Err(js::type_error(format!(
                "opts.startTimeResolver must return a number or undefined, received {}",
                js::type_name(self.env, v)
            ))),
        }
    }

    /// The owner file a judgement of `record`, found at `lock_path`, consults: for the default
    /// judge of a record with a holder byte, the file it names if kept open, else its
    /// directory's if that exists; none for an injected judge, which never reads it.
    pub fn owner_file(&self, lock_path: &Path, record: &ParsedRecord) -> Option<Arc<OwnerFile>> {
        if self.opts.injected() || record.owner_lock().is_none() {
            return None;
        }
        owner_file_for_judging(lock_path.parent()?, record.owner_file().flatten())
    }

    pub fn verdict(&self, record: &ParsedRecord, owners: Option<&OwnerFile>) -> JsResult<Verdict> {
        Ok(self.judgement(record, owners)?.0)
    }

    /// The verdict and what it rests on (`kernel_lock`, `pid`, `heartbeat`, or `injected`
    /// when the caller's resolver and clock decided as in the original).
    pub fn judgement(
        &self,
        record: &ParsedRecord,
        owners: Option<&OwnerFile>,
    ) -> JsResult<(Verdict, &'static str)> {
        let stale_ms = self.opts.heartbeat_stale_ms;
        if !self.opts.injected() {
            let (verdict, evidence) =
                enhanced_judgement(record, owners, wall_clock_ms(), stale_ms, &self.probes);
            return Ok((verdict, evidence.as_str()));
        }
        // The original evaluates now() before it asks the resolver.
        let now = self.now()?;
        let verdict = original_verdict(record, &mut |r| self.start_time(r.pid()), now, stale_ms)?;
        Ok((verdict, "injected"))
    }
}
