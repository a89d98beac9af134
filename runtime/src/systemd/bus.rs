//! systemd's manager over the system bus (zbus).
//!
//! cgroups-rs 0.5 has a systemd manager built on the same zbus, read and tried before this
//! was written; it does not fit berth: it opens a new bus connection (connect,
//! authenticate, Hello) for every call where berthd keeps one; its StartTransientUnit
//! returns when systemd has queued the job, not run it, so the scope's cgroup may not
//! exist yet when the caller writes its limits; it has no way to ask whether a slice is
//! already there (the kubelet usually made it) before starting one; and it pins nix 0.25,
//! a second nix next to the workspace's. What berth needs is five calls, here.

use std::time::{Duration, Instant};

use zbus::blocking::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use super::props::Property;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// How long a start or stop job may take: generous, the lane runs under emulation.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to systemd.
pub struct Bus {
    conn: Connection,
}

fn no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}

impl Bus {
    pub fn system() -> Result<Bus, String> {
        Connection::system()
            .map(|conn| Bus { conn })
            .map_err(|e| format!("connect to systemd over the system bus: {e}"))
    }

    fn manager<B>(&self, method: &str, body: &B) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn.call_method(Some(DEST), PATH, Some(MANAGER), method, body)
    }

    /// The unit's `ActiveState` (`active`, `inactive`, `failed`, …); `None` when systemd
    /// has no such unit loaded.
    pub fn active_state(&self, unit: &str) -> Result<Option<String>, String> {
        let path: OwnedObjectPath = match self.manager("GetUnit", &(unit,)) {
            Ok(m) => m.body().deserialize().map_err(|e| format!("GetUnit {unit}: {e}"))?,
            Err(e) if no_such_unit(&e) => return Ok(None),
            Err(e) => return Err(format!("GetUnit {unit}: {e}")),
        };
        let reply = match self.conn.call_method(
            Some(DEST),
            &path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.freedesktop.systemd1.Unit", "ActiveState"),
        ) {
            Ok(r) => r,
            // Unloaded between the two calls.
            Err(zbus::Error::MethodError(..)) => return Ok(None),
            Err(e) => return Err(format!("{unit} ActiveState: {e}")),
        };
        let v: OwnedValue =
            reply.body().deserialize().map_err(|e| format!("{unit} ActiveState: {e}"))?;
        Ok(Some(string_of(&v)))
    }

    /// Starts a transient unit and waits until systemd has run the job (its cgroup then
    /// exists, with the scope's processes in it).
    pub fn start_transient(&self, unit: &str, props: Vec<Property>) -> Result<(), String> {
        if self.active_state(unit)?.as_deref() == Some("failed") {
            self.reset_failed(unit)?;
        }
        let aux: Vec<(&str, Vec<(&str, Value)>)> = Vec::new();
        let props: Vec<(&str, Value)> = props.into_iter().collect();
        self.manager("StartTransientUnit", &(unit, "replace", props, aux))
            .map_err(|e| format!("start {unit}: {e}"))?;
        self.wait(unit, |s| match s {
            Some("active") => Some(Ok(())),
            Some("failed") => Some(Err(format!("systemd could not start {unit}"))),
            None => Some(Err(format!("{unit} ended as it started"))),
            _ => None,
        })
    }

    /// Stops a unit and waits until it is gone or inactive. A unit that is not there is
    /// fine; a failed one is reset so that its name can be used again.
    pub fn stop(&self, unit: &str) -> Result<(), String> {
        match self.manager("StopUnit", &(unit, "replace")) {
            Ok(_) => {}
            Err(e) if no_such_unit(&e) => return Ok(()),
            Err(e) => return Err(format!("stop {unit}: {e}")),
        }
        let failed = std::cell::Cell::new(false);
        self.wait(unit, |s| match s {
            None | Some("inactive") => Some(Ok(())),
            Some("failed") => {
                failed.set(true);
                Some(Ok(()))
            }
            _ => None,
        })?;
        if failed.get() {
            self.reset_failed(unit)?;
        }
        Ok(())
    }

    /// Changes properties of a running unit (and systemd applies them to its cgroup).
    pub fn set_properties(&self, unit: &str, props: Vec<Property>) -> Result<(), String> {
        let props: Vec<(&str, Value)> = props.into_iter().collect();
        self.manager("SetUnitProperties", &(unit, true, props))
            .map(drop)
            .map_err(|e| format!("set properties of {unit}: {e}"))
    }

    fn reset_failed(&self, unit: &str) -> Result<(), String> {
        match self.manager("ResetFailedUnit", &(unit,)) {
            Ok(_) => Ok(()),
            Err(e) if no_such_unit(&e) => Ok(()),
            Err(e) => Err(format!("reset {unit}: {e}")),
        }
    }

    /// Polls the unit's state until `done` decides. A start or stop job of a scope or
    /// slice runs within milliseconds; polling keeps this free of signal subscriptions.
    fn wait(
        &self,
        unit: &str,
        done: impl Fn(Option<&str>) -> Option<Result<(), String>>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + JOB_TIMEOUT;
        let mut pause = Duration::from_micros(200);
        loop {
            let state = self.active_state(unit)?;
            if let Some(r) = done(state.as_deref()) {
                return r;
            }
            if Instant::now() > deadline {
                return Err(format!("{unit} still {state:?} after {JOB_TIMEOUT:?}"));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// Runs `f` on berthd's one connection to systemd, made on first use and made again
/// after a call failed (systemd or the bus may have restarted). Calls are short and few
/// (a pod's slice at start and removal), so one connection serves them in turn.
pub fn with_shared<T>(f: impl FnOnce(&Bus) -> Result<T, String>) -> Result<T, String> {
    static SHARED: std::sync::Mutex<Option<Bus>> = std::sync::Mutex::new(None);
    let mut guard = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        *guard = Some(Bus::system()?);
    }
    let result = f(guard.as_ref().expect("connected above"));
    if result.is_err() {
        *guard = None;
    }
    result
}

/// A property value that is a string (possibly wrapped in a variant).
fn string_of(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        Value::Value(inner) => string_of(inner),
        other => format!("{other:?}"),
    }
}
