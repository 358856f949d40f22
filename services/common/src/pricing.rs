//! The pricing engine: a price table in LiteLLM's `model_prices_and_context_window.json`
//! format (the compiled-in `pricing/builtin_prices.json`, with `PRICING_FILE` layered on top and
//! re-read on SIGHUP by [`reload_on_sighup`], which metering and the gateway both run), and the
//! rules that turn one usage event into an exact, per-modality cost.
//!
//! The table keys read, the model-name lookup and every pricing rule are documented once, for
//! users and for this code alike, in the metering README's "Pricing" section
//! (`services/metering/README.md`); the unit tests in `pricing/tests.rs` pin each rule.
//! All arithmetic is `rust_decimal`; each cost component is rounded to [`COST_SCALE`] places.

use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

mod metadata;
mod reload;
#[cfg(test)]
mod tests;

pub use metadata::usage_from_metadata;
pub use reload::{ReloadOutcome, reload_on_sighup};

/// The built-in table, compiled in.
const BUILTIN: &str = include_str!("pricing/builtin_prices.json");

/// Decimal places kept for every stored cost (Decimal(38, 12) in ClickHouse).
pub const COST_SCALE: u32 = 12;
/// Decimal places kept for measured seconds before pricing them.
const SECONDS_SCALE: u32 = 6;

/// Why a price table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The file could not be read.
    #[error("cannot read pricing file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file (a directory, a FIFO, a device).
    #[error("pricing file {path} is not a regular file")]
    NotAFile {
        /// File path.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_FILE_BYTES`]; it is not read further.
    #[error("pricing file {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// File path.
        path: PathBuf,
    },
    /// The text is not JSON, or not an object of entries.
    #[error("pricing table is not a JSON object of model entries: {0}")]
    Json(#[from] serde_json::Error),
    /// The top level is not an object.
    #[error("pricing table must be a JSON object of model name -> entry")]
    NotAnObject,
    /// A price we read is not a non-negative number.
    #[error("pricing entry {model:?}: {key} must be a non-negative number, got {value}")]
    BadPrice {
        /// The entry.
        model: String,
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
    },
}

/// One model's prices, in USD. `None` = the entry does not have that key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceEntry {
    /// Plain input token price (TEXT, and the fallback for other modalities).
    pub input_cost_per_token: Option<Decimal>,
    /// Plain output token price.
    pub output_cost_per_token: Option<Decimal>,
    /// AUDIO input tokens.
    pub input_cost_per_audio_token: Option<Decimal>,
    /// AUDIO output tokens.
    pub output_cost_per_audio_token: Option<Decimal>,
    /// VIDEO output tokens (avatars).
    pub output_cost_per_video_token: Option<Decimal>,
    /// IMAGE input tokens.
    pub input_cost_per_image_token: Option<Decimal>,
    /// VIDEO input tokens.
    pub input_cost_per_video_token: Option<Decimal>,
    /// Cached prompt tokens.
    pub cache_read_input_token_cost: Option<Decimal>,
    /// Thoughts tokens (LiteLLM's reasoning price).
    pub output_cost_per_reasoning_token: Option<Decimal>,
    /// Per character the client sent.
    pub input_cost_per_character: Option<Decimal>,
    /// Per character the model returned.
    pub output_cost_per_character: Option<Decimal>,
    /// Per second of input audio.
    pub input_cost_per_audio_per_second: Option<Decimal>,
    /// Per second of output audio.
    pub output_cost_per_audio_per_second: Option<Decimal>,
    /// Per second of input video.
    pub input_cost_per_video_per_second: Option<Decimal>,
    /// Per input image.
    pub input_cost_per_image: Option<Decimal>,
    /// LiteLLM's `deprecation_date`: the model still prices, and is logged once as deprecated.
    pub deprecation_date: Option<String>,
    /// livegate's `successor`: the model to move to, named in that log line.
    pub successor: Option<String>,
}

/// The keys read from an entry, with their setters.
type Setter = fn(&mut PriceEntry) -> &mut Option<Decimal>;
const KEYS: &[(&str, Setter)] = &[
    ("input_cost_per_token", |e| &mut e.input_cost_per_token),
    ("output_cost_per_token", |e| &mut e.output_cost_per_token),
    ("input_cost_per_audio_token", |e| {
        &mut e.input_cost_per_audio_token
    }),
    ("output_cost_per_audio_token", |e| {
        &mut e.output_cost_per_audio_token
    }),
    ("output_cost_per_video_token", |e| {
        &mut e.output_cost_per_video_token
    }),
    ("input_cost_per_image_token", |e| {
        &mut e.input_cost_per_image_token
    }),
    ("input_cost_per_video_token", |e| {
        &mut e.input_cost_per_video_token
    }),
    ("cache_read_input_token_cost", |e| {
        &mut e.cache_read_input_token_cost
    }),
    ("output_cost_per_reasoning_token", |e| {
        &mut e.output_cost_per_reasoning_token
    }),
    ("input_cost_per_character", |e| {
        &mut e.input_cost_per_character
    }),
    ("output_cost_per_character", |e| {
        &mut e.output_cost_per_character
    }),
    ("input_cost_per_audio_per_second", |e| {
        &mut e.input_cost_per_audio_per_second
    }),
    ("output_cost_per_audio_per_second", |e| {
        &mut e.output_cost_per_audio_per_second
    }),
    ("input_cost_per_video_per_second", |e| {
        &mut e.input_cost_per_video_per_second
    }),
    ("input_cost_per_image", |e| &mut e.input_cost_per_image),
];

/// A parsed table: model name → entry.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: HashMap<String, PriceEntry>,
}

impl PriceTable {
    /// Parses LiteLLM-format JSON. Non-object values and LiteLLM's `sample_spec` are skipped.
    ///
    /// # Errors
    /// [`PricingError`] for invalid JSON or a price that is not a non-negative number.
    pub fn parse(json: &str) -> Result<Self, PricingError> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        let serde_json::Value::Object(map) = value else {
            return Err(PricingError::NotAnObject);
        };
        let mut entries = HashMap::with_capacity(map.len());
        for (model, raw) in map {
            let serde_json::Value::Object(fields) = raw else {
                continue;
            };
            if model == "sample_spec" {
                continue;
            }
            let mut entry = PriceEntry::default();
            for (key, slot) in KEYS {
                if let Some(v) = fields.get(*key) {
                    *slot(&mut entry) = price(&model, key, v)?;
                }
            }
            let text = |key: &str| {
                fields
                    .get(key)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            };
            entry.deprecation_date = text("deprecation_date");
            entry.successor = text("successor");
            entries.insert(model, entry);
        }
        Ok(Self { entries })
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// See [`PriceTable::parse`]; [`PricingError::Read`] when the file cannot be read.
    pub fn load(path: &Path) -> Result<Self, PricingError> {
        Self::parse(&read(path)?)
    }

    /// The built-in table.
    ///
    /// # Panics
    /// Never in practice: the compiled-in JSON is checked by a unit test.
    #[expect(
        clippy::expect_used,
        reason = "the compiled-in JSON is checked by a unit test"
    )]
    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("the built-in price table is valid")
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `model` under the lookup rules of the module doc, with the key it was
    /// found under.
    pub fn lookup(&self, model: &str) -> Option<(&str, &PriceEntry)> {
        lookup_names(model)
            .into_iter()
            .find_map(|name| self.entries.get_key_value(name.as_str()))
            .map(|(k, e)| (k.as_str(), e))
    }
}

/// The largest pricing file read. LiteLLM's whole table (every provider, every model) is
/// about 1.5 MB; a `PRICING_FILE` pointing at something else (a log, a device, a symlink an
/// operator got wrong) must not read without end, in a process that serves sessions.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A pricing file's text: a regular file (a FIFO would block the reader until something
/// writes to it, a device may never end) of at most [`MAX_FILE_BYTES`]; symlinks followed.
fn read(path: &Path) -> Result<String, PricingError> {
    use std::io::Read as _;
    let read_error = |source| PricingError::Read {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(read_error)?.is_file() {
        return Err(PricingError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(PricingError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

/// [`Pricing::version`] for the built-in table plus `file_text`.
fn version_of(file_text: &str) -> Arc<str> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(BUILTIN.as_bytes());
    // A separator, so that moving bytes between the two cannot give the same digest.
    h.update([0u8]);
    h.update(file_text.as_bytes());
    let digest = hex::encode(h.finalize());
    Arc::from(digest.get(..16).unwrap_or(&digest))
}

/// The names a model is looked up under, in order. A `gemini/ID` name (a Gemini Developer API
/// session) is priced as the Developer API prices it: `gemini/ID`, then the bare `ID`, never
/// a `vertex_ai/` entry.
fn lookup_names(model: &str) -> Vec<String> {
    let model = model.trim();
    let id = model.rsplit('/').next().unwrap_or(model);
    let mut names = vec![model.to_string()];
    let candidates = if model.starts_with("gemini/") {
        vec![id.to_string()]
    } else {
        vec![
            id.to_string(),
            format!("vertex_ai/{id}"),
            format!("gemini/{id}"),
        ]
    };
    for candidate in candidates {
        if !names.contains(&candidate) {
            names.push(candidate);
        }
    }
    names
}

fn price(
    model: &str,
    key: &'static str,
    v: &serde_json::Value,
) -> Result<Option<Decimal>, PricingError> {
    let bad = || PricingError::BadPrice {
        model: model.to_string(),
        key,
        value: v.to_string(),
    };
    let parsed = match v {
        serde_json::Value::Null => return Ok(None),
        // JSON numbers arrive as f64; Rust prints an f64 as the shortest decimal that reads
        // back to the same f64, which is exactly the literal written in the file (5e-07 →
        // "0.0000005"), so no binary rounding error enters the price.
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Decimal::from_str(&format!("{f}")).map_err(|_| bad())?,
            _ => return Err(bad()),
        },
        serde_json::Value::String(s) => Decimal::from_str(s.trim())
            .or_else(|_| Decimal::from_scientific(s.trim()))
            .map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    if parsed.is_sign_negative() && !parsed.is_zero() {
        return Err(bad());
    }
    Ok(Some(parsed.normalize()))
}

/// Token counts split by modality (TEXT includes DOCUMENT and unspecified).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByModality {
    /// TEXT (and DOCUMENT, MODALITY_UNSPECIFIED).
    pub text: u64,
    /// AUDIO.
    pub audio: u64,
    /// IMAGE.
    pub image: u64,
    /// VIDEO.
    pub video: u64,
}

impl ByModality {
    /// The sum over modalities.
    pub fn sum(&self) -> u64 {
        self.text
            .saturating_add(self.audio)
            .saturating_add(self.image)
            .saturating_add(self.video)
    }

    /// The details, with whatever `total` has beyond them counted as TEXT.
    pub fn with_total(self, total: u64) -> Self {
        Self {
            text: self.text.saturating_add(total.saturating_sub(self.sum())),
            ..self
        }
    }
}

/// What one event used: Google's token counts and the gateway's measurements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// `promptTokenCount` (includes cached tokens).
    pub prompt_tokens: u64,
    /// `promptTokensDetails`.
    pub prompt: ByModality,
    /// `candidatesTokenCount` / `responseTokenCount`.
    pub response_tokens: u64,
    /// The output details.
    pub response: ByModality,
    /// `cachedContentTokenCount`.
    pub cached_tokens: u64,
    /// `cacheTokensDetails`.
    pub cached: ByModality,
    /// `toolUsePromptTokenCount`.
    pub tool_use_tokens: u64,
    /// `toolUsePromptTokensDetails`.
    pub tool_use: ByModality,
    /// `thoughtsTokenCount`.
    pub thoughts_tokens: u64,
    /// Characters of text the client sent.
    pub input_characters: u64,
    /// Seconds of input audio.
    pub input_audio_seconds: f64,
    /// Seconds of input video.
    pub input_video_seconds: f64,
    /// Still images the client sent.
    pub input_images: u64,
    /// Characters of text the model returned.
    pub output_characters: u64,
    /// Seconds of audio the model returned.
    pub output_audio_seconds: f64,
    /// Google's `trafficType` (empty when not sent).
    pub traffic_type: String,
}

/// The `trafficType` of prepaid usage: provisioned throughput is paid for up front, so its
/// usage is recorded at cost 0 (with its tokens) and marked prepaid.
pub const PREPAID_TRAFFIC: &str = "PROVISIONED_THROUGHPUT";

impl Usage {
    /// Whether the usage is prepaid (provisioned throughput).
    pub fn is_prepaid(&self) -> bool {
        self.traffic_type.eq_ignore_ascii_case(PREPAID_TRAFFIC)
    }
}

/// An event's cost, by component; every component is rounded to [`COST_SCALE`] places, and
/// the totals are sums of the rounded components.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Uncached TEXT prompt tokens, plus input characters.
    pub input_text: Decimal,
    /// Uncached AUDIO prompt tokens, plus input audio seconds.
    pub input_audio: Decimal,
    /// Uncached IMAGE prompt tokens, plus input images.
    pub input_image: Decimal,
    /// Uncached VIDEO prompt tokens, plus input video seconds.
    pub input_video: Decimal,
    /// Cached prompt tokens at the cache-read price.
    pub cached: Decimal,
    /// Tool-use prompt tokens.
    pub tool_use: Decimal,
    /// TEXT (and IMAGE) response tokens, plus output characters.
    pub output_text: Decimal,
    /// VIDEO response tokens (Gemini 3.8 Live avatars) at `output_cost_per_video_token`, else
    /// the plain output price.
    pub output_video: Decimal,
    /// AUDIO response tokens, plus output audio seconds.
    pub output_audio: Decimal,
    /// Thoughts tokens.
    pub thoughts: Decimal,
}

impl Cost {
    /// All input components.
    pub fn input(&self) -> Decimal {
        sum(&[
            self.input_text,
            self.input_audio,
            self.input_image,
            self.input_video,
            self.cached,
            self.tool_use,
        ])
    }

    /// All output components.
    pub fn output(&self) -> Decimal {
        sum(&[
            self.output_text,
            self.output_video,
            self.output_audio,
            self.thoughts,
        ])
    }

    /// Input plus output.
    pub fn total(&self) -> Decimal {
        self.input().saturating_add(self.output())
    }

    fn rounded(self) -> Self {
        let r = |d: Decimal| {
            d.round_dp_with_strategy(COST_SCALE, RoundingStrategy::MidpointAwayFromZero)
                .normalize()
        };
        Self {
            input_text: r(self.input_text),
            input_audio: r(self.input_audio),
            input_image: r(self.input_image),
            input_video: r(self.input_video),
            cached: r(self.cached),
            tool_use: r(self.tool_use),
            output_text: r(self.output_text),
            output_video: r(self.output_video),
            output_audio: r(self.output_audio),
            thoughts: r(self.thoughts),
        }
    }
}

/// Costs added up, saturating at `Decimal::MAX`: `Decimal`'s `+` panics on overflow, and
/// absurd counts (a buggy upstream) times an absurd price (a typo in `PRICING_FILE`) must not
/// crash a service. A saturated cost is far beyond what a `Decimal(38, 12)` column holds, so
/// metering refuses to store it and sets the event aside.
fn sum(parts: &[Decimal]) -> Decimal {
    parts
        .iter()
        .fold(Decimal::ZERO, |acc, p| acc.saturating_add(*p))
}

/// `count × price`, 0 when the entry has no such price; `Decimal::MAX` when it overflows
/// (see [`sum`]).
fn times(count: Decimal, price: Option<Decimal>) -> Decimal {
    match price {
        Some(p) => count.checked_mul(p).unwrap_or(Decimal::MAX),
        None => Decimal::ZERO,
    }
}

fn tokens(n: u64) -> Decimal {
    Decimal::from(n)
}

/// Measured seconds as a decimal at microsecond precision; negative or non-finite is 0.
pub fn seconds(s: f64) -> Decimal {
    if !s.is_finite() || s <= 0.0 {
        return Decimal::ZERO;
    }
    Decimal::try_from(s)
        .map(|d| d.round_dp_with_strategy(SECONDS_SCALE, RoundingStrategy::MidpointAwayFromZero))
        .unwrap_or(Decimal::ZERO)
}

impl PriceEntry {
    /// Prices `usage` under the rules in the module doc.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let plain_in = self.input_cost_per_token;
        let plain_out = self.output_cost_per_token;
        let audio_in = self.input_cost_per_audio_token.or(plain_in);
        let image_in = self.input_cost_per_image_token.or(plain_in);
        let video_in = self.input_cost_per_video_token.or(plain_in);
        let audio_out = self.output_cost_per_audio_token.or(plain_out);
        let video_out = self.output_cost_per_video_token.or(plain_out);

        let prompt = usage.prompt.with_total(usage.prompt_tokens);
        // Cached tokens leave the prompt only when they have a price of their own.
        let (cached, cached_cost) = match self.cache_read_input_token_cost {
            Some(p) => {
                let cached = usage.cached.with_total(usage.cached_tokens);
                (cached, times(tokens(cached.sum()), Some(p)))
            }
            None => (ByModality::default(), Decimal::ZERO),
        };
        let tool_use = usage.tool_use.with_total(usage.tool_use_tokens);
        let response = usage.response.with_total(usage.response_tokens);

        // Google's token counts are the bill: a measurement price (per character, second or
        // image) applies only to a modality the usage has no token count for, so one
        // modality is never charged two ways (LiteLLM's rule too).
        let measured = |token_count: u64, quantity: Decimal, unit_price: Option<Decimal>| {
            if token_count == 0 {
                times(quantity, unit_price)
            } else {
                Decimal::ZERO
            }
        };
        let cost = Cost {
            input_text: times(tokens(prompt.text.saturating_sub(cached.text)), plain_in)
                .saturating_add(measured(
                    prompt.text,
                    tokens(usage.input_characters),
                    self.input_cost_per_character,
                )),
            input_audio: times(tokens(prompt.audio.saturating_sub(cached.audio)), audio_in)
                .saturating_add(measured(
                    prompt.audio,
                    seconds(usage.input_audio_seconds),
                    self.input_cost_per_audio_per_second,
                )),
            input_image: times(tokens(prompt.image.saturating_sub(cached.image)), image_in)
                .saturating_add(measured(
                    prompt.image,
                    tokens(usage.input_images),
                    self.input_cost_per_image,
                )),
            input_video: times(tokens(prompt.video.saturating_sub(cached.video)), video_in)
                .saturating_add(measured(
                    prompt.video,
                    seconds(usage.input_video_seconds),
                    self.input_cost_per_video_per_second,
                )),
            cached: cached_cost,
            tool_use: sum(&[
                times(tokens(tool_use.text), plain_in),
                times(tokens(tool_use.audio), audio_in),
                times(tokens(tool_use.image), image_in),
                times(tokens(tool_use.video), video_in),
            ]),
            // IMAGE output shares the text component and columns.
            output_text: times(
                tokens(response.text.saturating_add(response.image)),
                plain_out,
            )
            .saturating_add(measured(
                response.text,
                tokens(usage.output_characters),
                self.output_cost_per_character,
            )),
            output_video: times(tokens(response.video), video_out),
            output_audio: times(tokens(response.audio), audio_out).saturating_add(measured(
                response.audio,
                seconds(usage.output_audio_seconds),
                self.output_cost_per_audio_per_second,
            )),
            thoughts: times(
                tokens(usage.thoughts_tokens),
                self.output_cost_per_reasoning_token.or(plain_out),
            ),
        };
        cost.rounded()
    }
}

/// The result of pricing one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// The table key that priced it; `None` for an unknown model (cost 0).
    pub entry: Option<String>,
    /// The cost (all zero when unpriced or prepaid).
    pub cost: Cost,
    /// Prepaid usage (provisioned throughput): recorded at cost 0.
    pub prepaid: bool,
    /// [`Pricing::version`] of the tables that priced it: read with them in one step, so a
    /// reload at the same moment cannot give a bill one table's prices and the other's name.
    pub version: Arc<str>,
}

/// What a [`Pricing::reload`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Entries now loaded from the file.
    pub entries: usize,
    /// Entries the previous file had that no table prices now (neither the new file nor the
    /// built-in table): their models are unknown from now on, billed at cost 0 (`priced = 0`)
    /// and free for the gateway's budget checks.
    pub unpriced: Vec<String>,
}

/// The file's table and the version of the tables in force, replaced together on reload.
#[derive(Debug)]
struct Current {
    user: Arc<PriceTable>,
    version: Arc<str>,
}

/// The live pricing state: the built-in table, the user's file on top (reloadable), and the
/// set of unknown and deprecated models already logged about.
#[derive(Debug)]
pub struct Pricing {
    builtin: PriceTable,
    file: Option<PathBuf>,
    /// The file's table and the version of the tables in force (see [`Pricing::version`]),
    /// replaced whole on reload, both at once; readers clone the `Arc`s and never wait on a
    /// reload.
    current: RwLock<Current>,
    /// Unknown and deprecated models (or entries) logged about once each. A std `Mutex`: the critical section is a set
    /// insert, never held across an await.
    warned: Mutex<HashSet<String>>,
}

impl Pricing {
    /// The built-in table plus `file`, if given.
    ///
    /// # Errors
    /// [`PricingError`] when the file cannot be read or parsed.
    pub fn load(file: Option<&Path>) -> Result<Self, PricingError> {
        let (user, text) = match file {
            Some(path) => {
                let text = read(path)?;
                (PriceTable::parse(&text)?, text)
            }
            None => (PriceTable::default(), String::new()),
        };
        Ok(Self {
            builtin: PriceTable::builtin(),
            file: file.map(Path::to_path_buf),
            current: RwLock::new(Current {
                user: Arc::new(user),
                version: version_of(&text),
            }),
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// Names the tables in force: the first 16 hex digits of SHA-256 over the built-in table
    /// and the pricing file's text. Stored with every usage row, so a bill can be recomputed
    /// with the very prices it was made with. To record what priced an event, use
    /// [`Priced::version`]: this is only what is in force now.
    pub fn version(&self) -> Arc<str> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version
            .clone()
    }

    /// Built-in prices with `user` layered on top (tests, embedding).
    pub fn with_tables(builtin: PriceTable, user: PriceTable) -> Self {
        Self {
            builtin,
            file: None,
            current: RwLock::new(Current {
                user: Arc::new(user),
                version: version_of(""),
            }),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// Re-reads the pricing file (SIGHUP). Without a file, does nothing. On error the previous
    /// table stays in force.
    ///
    /// # Errors
    /// [`PricingError`] when the file cannot be read or parsed.
    pub fn reload(&self) -> Result<Reloaded, PricingError> {
        let Some(path) = &self.file else {
            return Ok(Reloaded::default());
        };
        let text = read(path)?;
        let table = Arc::new(PriceTable::parse(&text)?);
        let entries = table.len();
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            Current {
                user: table.clone(),
                version: version_of(&text),
            },
        );
        let mut unpriced: Vec<String> = old
            .user
            .entries
            .keys()
            .filter(|k| table.lookup(k).is_none() && self.builtin.lookup(k).is_none())
            .cloned()
            .collect();
        unpriced.sort();
        // A model the new file prices should be warned about again if it disappears later.
        self.warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(Reloaded { entries, unpriced })
    }

    /// Whether `name` is logged about for the first time (each unknown or deprecated model is
    /// logged once, and again after a reload).
    fn first_sighting(&self, name: &str) -> bool {
        self.warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned())
    }

    /// The pricing file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Prices `usage` for `model`. An unknown model costs 0, and is logged as a warning the
    /// first time it is seen.
    pub fn price(&self, model: &str, usage: &Usage) -> Priced {
        let (user, version) = {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            (current.user.clone(), current.version.clone())
        };
        let found = user.lookup(model).or_else(|| self.builtin.lookup(model));
        match found {
            Some((key, entry)) => {
                if let Some(date) = &entry.deprecation_date
                    && self.first_sighting(key)
                {
                    tracing::warn!(
                        model,
                        pricing.entry = key,
                        deprecation_date = %date,
                        successor = entry.successor.as_deref().unwrap_or("(none named)"),
                        "model is deprecated by Google: still priced, move to its successor"
                    );
                }
                let prepaid = usage.is_prepaid();
                Priced {
                    entry: Some(key.to_string()),
                    cost: if prepaid {
                        Cost::default()
                    } else {
                        entry.cost(usage)
                    },
                    prepaid,
                    version,
                }
            }
            None => {
                if self.first_sighting(model) {
                    tracing::warn!(
                        model,
                        "no price for model: its usage is recorded with cost 0 and priced = 0 \
                         (add it to PRICING_FILE and send SIGHUP)"
                    );
                }
                Priced {
                    entry: None,
                    cost: Cost::default(),
                    prepaid: usage.is_prepaid(),
                    version,
                }
            }
        }
    }
}
