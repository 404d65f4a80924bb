//! Where keys are: an index from key paths (`sources[0].rate_limit.burst`)
//! to lines, built from the YAML event stream, and YAML deserialization whose
//! errors name the file, the line and the key.

use std::collections::HashMap;
use std::path::Path;

use super::ConfigError;

/// Key path → 1-based line, from the YAML event stream.
#[derive(Debug, Default)]
pub struct Locator {
    lines: HashMap<String, usize>,
}

impl Locator {
    /// Indexes `text`. A document the parser rejects yields an empty index (the
    /// deserializer reports that error itself, with its location).
    pub fn new(text: &str) -> Self {
        use saphyr_parser::{Event, Parser};
        enum Frame {
            Map { path: String, key: Option<String> },
            Seq { path: String, index: usize },
        }
        fn child(frames: &mut [Frame]) -> Option<String> {
            match frames.last_mut()? {
                Frame::Map { path, key } => key.take().map(|k| join(path, &k)),
                Frame::Seq { path, index } => {
                    let p = format!("{path}[{index}]");
                    *index += 1;
                    Some(p)
                }
            }
        }
        fn join(path: &str, key: &str) -> String {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        }
        let mut lines = HashMap::new();
        let mut frames: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let line = span.start.line();
            // A mapping awaiting its key takes this scalar as the key.
            let awaiting_key = matches!(frames.last(), Some(Frame::Map { key: None, .. }));
            match event {
                Event::Scalar(value, ..) if awaiting_key => {
                    if let Some(Frame::Map { path, key }) = frames.last_mut() {
                        let p = join(path, &value);
                        lines.entry(p).or_insert(line);
                        *key = Some(value.into_owned());
                    }
                }
                Event::Scalar(..) | Event::Alias(..) => {
                    if let Some(p) = child(&mut frames) {
                        lines.entry(p).or_insert(line);
                    }
                }
                Event::MappingStart(..) => {
                    let path = child(&mut frames).unwrap_or_default();
                    lines.entry(path.clone()).or_insert(line);
                    frames.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = child(&mut frames).unwrap_or_default();
                    lines.entry(path.clone()).or_insert(line);
                    frames.push(Frame::Seq { path, index: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    frames.pop();
                }
                _ => {}
            }
        }
        Locator { lines }
    }

    /// The line of `path`, or of its nearest located parent.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Deserializes the YAML `text`, read from `path`, into the raw struct `T`,
/// with a type error or an unknown key reported as [`ConfigError::Invalid`]
/// (file, line, key) in the style of [`Config::parse`]. An empty document is
/// `T::default()`. For the other YAML files the exporter reads
/// (`--web.config.file`).
pub fn from_yaml<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    text: &str,
    locator: &Locator,
) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| locator.line(&key));
        let mut message = inner.to_string();
        // serde_yaml appends " at line L column C"; the line is printed up front.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        let key = if key == "." || key.is_empty() {
            "(top level)".into()
        } else {
            key
        };
        ConfigError::Invalid {
            file: path.to_path_buf(),
            line,
            key,
            message,
        }
    })
}
