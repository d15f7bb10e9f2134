//! The Zenoh side of a bridge: mode, endpoints, configuration file, single settings.

use std::path::PathBuf;
use std::str::FromStr;

use zenoh::config::EndPoint;

use super::BridgeError;

/// How the bridge joins the Zenoh network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Talks to other peers directly (found by multicast scouting or `connect`).
    Peer,
    /// Talks through one router (`connect` names it).
    Client,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::Client => "client",
        }
    }
}

/// Zenoh settings of a bridge. What is not set keeps Zenoh's default (peer mode, multicast
/// scouting on, listening on a port of its choosing).
#[derive(Clone, Debug, Default)]
pub struct ZenohOptions {
    /// Peer or client (default: the configuration file's, else peer).
    pub mode: Option<Mode>,
    /// Endpoints to listen on (`tcp/0.0.0.0:7447`).
    pub listen: Vec<String>,
    /// Endpoints to connect to (`tcp/192.168.1.2:7447`); retried until they answer.
    pub connect: Vec<String>,
    /// A Zenoh configuration file (JSON5), applied first.
    pub config_file: Option<PathBuf>,
    /// Single settings, `(path, JSON5 value)`, applied last: `("scouting/multicast/enabled",
    /// "false")`.
    pub settings: Vec<(String, String)>,
}

/// Checks one endpoint, for an error that names it.
fn endpoint(s: &str) -> Result<String, BridgeError> {
    EndPoint::from_str(s)
        .map(|e| e.to_string())
        .map_err(|e| BridgeError::Endpoint {
            endpoint: s.to_string(),
            reason: e.to_string(),
        })
}

/// A JSON array of checked endpoints.
fn endpoints(list: &[String]) -> Result<String, BridgeError> {
    let checked = list
        .iter()
        .map(|s| endpoint(s))
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string(&checked).map_err(|e| BridgeError::Config(e.to_string()))
}

impl ZenohOptions {
    /// The Zenoh configuration these options make, receiving samples of at most `max_sample`
    /// bytes if given (settings still win).
    pub fn to_config(&self, max_sample: Option<usize>) -> Result<zenoh::Config, BridgeError> {
        let mut config = match &self.config_file {
            Some(path) => zenoh::Config::from_file(path)
                .map_err(|e| BridgeError::Config(format!("{}: {e}", path.display())))?,
            None => zenoh::Config::default(),
        };
        let set = |config: &mut zenoh::Config, key: &str, value: &str| {
            config
                .insert_json5(key, value)
                .map_err(|e| BridgeError::Config(format!("{key} = {value}: {e}")))
        };
        if let Some(max) = max_sample {
            set(
                &mut config,
                "transport/link/rx/max_message_size",
                &max.to_string(),
            )?;
        }
        if let Some(mode) = self.mode {
            set(&mut config, "mode", &format!("\"{}\"", mode.name()))?;
        }
        if !self.listen.is_empty() {
            set(&mut config, "listen/endpoints", &endpoints(&self.listen)?)?;
        }
        if !self.connect.is_empty() {
            set(&mut config, "connect/endpoints", &endpoints(&self.connect)?)?;
        }
        for (key, value) in &self.settings {
            set(&mut config, key, value)?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_settings_are_checked() {
        let ok = ZenohOptions {
            mode: Some(Mode::Client),
            connect: vec!["tcp/10.0.0.1:7447".into()],
            settings: vec![("scouting/multicast/enabled".into(), "false".into())],
            ..Default::default()
        };
        let config = ok.to_config(Some(8192)).expect("valid options");
        assert_eq!(config.get_json("mode").ok().as_deref(), Some("\"client\""));
        let bad = ZenohOptions {
            listen: vec!["no-protocol".into()],
            ..Default::default()
        };
        assert!(matches!(
            bad.to_config(None),
            Err(BridgeError::Endpoint { endpoint, .. }) if endpoint == "no-protocol"
        ));
        let bad = ZenohOptions {
            settings: vec![("no/such/setting".into(), "1".into())],
            ..Default::default()
        };
        assert!(matches!(bad.to_config(None), Err(BridgeError::Config(_))));
    }
}
