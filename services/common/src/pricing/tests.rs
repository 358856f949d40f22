//! One test per pricing rule, each against a figure computed by hand (shown in the comments).

use super::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn entry(json: &str) -> PriceEntry {
    let table = PriceTable::parse(&format!(r#"{{"m": {json}}}"#)).unwrap();
    table.lookup("m").unwrap().1.clone()
}

fn builtin() -> Pricing {
    Pricing::with_tables(PriceTable::builtin(), PriceTable::default())
}

#[test]
fn builtin_table_has_the_live_models_at_the_documented_prices() {
    let t = PriceTable::builtin();
    for model in [
        "gemini-live-2.5-flash-native-audio",
        "gemini-live-2.5-flash-preview-native-audio-09-2025",
        "gemini-2.5-flash-native-audio",
        "gemini-3.8-live",
        "gemini-2.0-flash-live-preview-04-09",
        "gemini-live-2.5-flash",
        "gemini-3.5-live-translate-preview",
        "gemini-3.5-transcribe-live",
        "projects/p/locations/us-central1/publishers/google/models/gemini-3.8-live",
    ] {
        assert!(t.lookup(model).is_some(), "{model} missing");
    }
    let (_, e) = t.lookup("gemini-live-2.5-flash-native-audio").unwrap();
    // $0.50 / $3.00 / $3.00 in, $2.00 / $12.00 out per 1M tokens.
    assert_eq!(e.input_cost_per_token, Some(d("0.0000005")));
    assert_eq!(e.input_cost_per_audio_token, Some(d("0.000003")));
    assert_eq!(e.input_cost_per_image_token, Some(d("0.000003")));
    assert_eq!(e.input_cost_per_video_token, Some(d("0.000003")));
    assert_eq!(e.output_cost_per_token, Some(d("0.000002")));
    assert_eq!(e.output_cost_per_audio_token, Some(d("0.000012")));
    let (_, e) = t.lookup("gemini-3.8-live").unwrap();
    assert_eq!(e.input_cost_per_token, Some(d("0.00000075")));
    assert_eq!(e.input_cost_per_video_per_second, Some(d("0.0000333")));
    assert_eq!(e.output_cost_per_token, Some(d("0.0000045")));
}

#[test]
fn modality_prices_with_fallback_to_the_plain_price() {
    // No video price: video tokens fall back to input_cost_per_token.
    let e = entry(
        r#"{"input_cost_per_token": 5e-07, "input_cost_per_audio_token": 3e-06,
            "input_cost_per_image_token": 3e-06,
            "output_cost_per_token": 2e-06, "output_cost_per_audio_token": 1.2e-05}"#,
    );
    let usage = Usage {
        prompt_tokens: 1000,
        prompt: ByModality {
            text: 200,
            audio: 400,
            image: 100,
            video: 300,
        },
        response_tokens: 150,
        response: ByModality {
            text: 50,
            audio: 100,
            ..ByModality::default()
        },
        ..Usage::default()
    };
    let c = e.cost(&usage);
    assert_eq!(c.input_text, d("0.0001")); // 200 × 0.0000005
    assert_eq!(c.input_audio, d("0.0012")); // 400 × 0.000003
    assert_eq!(c.input_image, d("0.0003")); // 100 × 0.000003
    assert_eq!(c.input_video, d("0.00015")); // 300 × 0.0000005 (fallback)
    assert_eq!(c.output_text, d("0.0001")); // 50 × 0.000002
    assert_eq!(c.output_audio, d("0.0012")); // 100 × 0.000012
    assert_eq!(c.input(), d("0.00175"));
    assert_eq!(c.output(), d("0.0013"));
    assert_eq!(c.total(), d("0.00305"));

    // Without any audio price, audio falls back to the plain prices both ways.
    let plain = entry(r#"{"input_cost_per_token": 5e-07, "output_cost_per_token": 2e-06}"#);
    let c = plain.cost(&usage);
    assert_eq!(c.input_audio, d("0.0002")); // 400 × 0.0000005
    assert_eq!(c.output_audio, d("0.0002")); // 100 × 0.000002
}

#[test]
fn tokens_beyond_the_details_count_as_text() {
    let e = entry(r#"{"input_cost_per_token": 1e-06, "input_cost_per_audio_token": 1e-05}"#);
    // 1000 prompt tokens, details name 600 audio: the other 400 are text.
    let usage = Usage {
        prompt_tokens: 1000,
        prompt: ByModality {
            audio: 600,
            ..ByModality::default()
        },
        ..Usage::default()
    };
    let c = e.cost(&usage);
    assert_eq!(c.input_text, d("0.0004")); // 400 × 0.000001
    assert_eq!(c.input_audio, d("0.006")); // 600 × 0.00001
}

#[test]
fn cached_tokens_leave_the_prompt_and_use_the_cache_price() {
    let e = entry(
        r#"{"input_cost_per_token": 5e-07, "input_cost_per_audio_token": 3e-06,
            "cache_read_input_token_cost": 5e-08}"#,
    );
    // promptTokenCount 1000 (text 100, audio 900) includes 500 cached audio tokens.
    let usage = Usage {
        prompt_tokens: 1000,
        prompt: ByModality {
            text: 100,
            audio: 900,
            ..ByModality::default()
        },
        cached_tokens: 500,
        cached: ByModality {
            audio: 500,
            ..ByModality::default()
        },
        ..Usage::default()
    };
    let c = e.cost(&usage);
    assert_eq!(c.input_text, d("0.00005")); // 100 × 0.0000005
    assert_eq!(c.input_audio, d("0.0012")); // (900 − 500) × 0.000003
    assert_eq!(c.cached, d("0.000025")); // 500 × 0.00000005
    assert_eq!(c.input(), d("0.001275"));

    // Cached tokens without details are text.
    let usage = Usage {
        prompt_tokens: 1000,
        cached_tokens: 400,
        ..Usage::default()
    };
    let c = e.cost(&usage);
    assert_eq!(c.input_text, d("0.0003")); // 600 × 0.0000005
    assert_eq!(c.cached, d("0.00002")); // 400 × 0.00000005

    // No cache price: cached tokens stay in the prompt at the ordinary price.
    let no_cache = entry(r#"{"input_cost_per_token": 5e-07}"#);
    let c = no_cache.cost(&usage);
    assert_eq!(c.input_text, d("0.0005")); // 1000 × 0.0000005
    assert_eq!(c.cached, Decimal::ZERO);
}

#[test]
fn tool_use_and_thoughts_tokens() {
    let e = entry(
        r#"{"input_cost_per_token": 5e-07, "input_cost_per_audio_token": 3e-06,
            "output_cost_per_token": 2e-06}"#,
    );
    let usage = Usage {
        tool_use_tokens: 300,
        tool_use: ByModality {
            audio: 100,
            ..ByModality::default()
        },
        thoughts_tokens: 50,
        ..Usage::default()
    };
    let c = e.cost(&usage);
    assert_eq!(c.tool_use, d("0.0004")); // 200 × 0.0000005 + 100 × 0.000003
    assert_eq!(c.thoughts, d("0.0001")); // 50 × 0.000002
    assert_eq!(c.input(), d("0.0004"));
    assert_eq!(c.output(), d("0.0001"));

    let reasoning =
        entry(r#"{"output_cost_per_token": 2e-06, "output_cost_per_reasoning_token": 3.5e-06}"#);
    assert_eq!(reasoning.cost(&usage).thoughts, d("0.000175")); // 50 × 0.0000035
}

#[test]
fn per_character_prices() {
    let e = entry(
        r#"{"input_cost_per_token": 0, "output_cost_per_token": 0,
            "input_cost_per_character": 1.25e-07, "output_cost_per_character": 3.75e-07}"#,
    );
    let usage = Usage {
        input_characters: 1200,
        output_characters: 300,
        ..Usage::default()
    };
    let c = e.cost(&usage);
    assert_eq!(c.input_text, d("0.00015")); // 1200 × 0.000000125
    assert_eq!(c.output_text, d("0.0001125")); // 300 × 0.000000375
    assert_eq!(c.total(), d("0.0002625"));
}

#[test]
fn per_second_prices() {
    let e = entry(
        r#"{"input_cost_per_audio_per_second": 1e-04, "output_cost_per_audio_per_second": 2e-04,
            "input_cost_per_video_per_second": 3.33e-05}"#,
    );
    let usage = Usage {
        input_audio_seconds: 12.5,
        output_audio_seconds: 3.25,
        input_video_seconds: 2.0,
        ..Usage::default()
    };
    let c = e.cost(&usage);
    assert_eq!(c.input_audio, d("0.00125")); // 12.5 × 0.0001
    assert_eq!(c.output_audio, d("0.00065")); // 3.25 × 0.0002
    assert_eq!(c.input_video, d("0.0000666")); // 2 × 0.0000333

    // Seconds are taken at microsecond precision and costs rounded to 1e-12:
    // 0.1234567 s → 0.123457 s; × 0.0000333 = 0.0000041111181 → 0.000004111118.
    let usage = Usage {
        input_video_seconds: 0.123_456_7,
        ..Usage::default()
    };
    assert_eq!(e.cost(&usage).input_video, d("0.000004111118"));

    // gemini-3.8-live's video is listed two ways (per token and per second): with Google's
    // VIDEO token count, only the tokens are billed (263 at $1/M); without one, the seconds.
    let p = builtin();
    let usage = Usage {
        prompt_tokens: 263,
        prompt: ByModality {
            video: 263,
            ..ByModality::default()
        },
        input_video_seconds: 1.0,
        ..Usage::default()
    };
    let priced = p.price("gemini-3.8-live", &usage);
    assert_eq!(priced.cost.input_video, d("0.000263")); // 263 × 0.000001, no surcharge
    let seconds_only = Usage {
        input_video_seconds: 1.0,
        ..Usage::default()
    };
    let priced = p.price("gemini-3.8-live", &seconds_only);
    assert_eq!(priced.cost.input_video, d("0.0000333")); // 1 s × 0.0000333
}

#[test]
fn a_measurement_price_applies_only_to_a_modality_without_tokens() {
    // Every modality priced both ways; each report has tokens for some modalities only.
    let e = entry(
        r#"{"input_cost_per_token": 1e-06, "input_cost_per_audio_token": 2e-06,
            "output_cost_per_token": 4e-06, "output_cost_per_audio_token": 8e-06,
            "input_cost_per_character": 1e-07, "output_cost_per_character": 3e-07,
            "input_cost_per_audio_per_second": 5e-05, "output_cost_per_audio_per_second": 7e-05,
            "input_cost_per_image": 1e-03, "input_cost_per_video_per_second": 2e-05}"#,
    );
    // Audio in by token, text in by character (no TEXT tokens), images by count, video by
    // second; audio out by second (no AUDIO tokens), text out by token.
    let usage = Usage {
        prompt_tokens: 100,
        prompt: ByModality {
            audio: 100,
            ..ByModality::default()
        },
        response_tokens: 10,
        response: ByModality {
            text: 10,
            ..ByModality::default()
        },
        input_characters: 50,
        input_audio_seconds: 3.0,
        input_images: 2,
        input_video_seconds: 4.0,
        output_characters: 40,
        output_audio_seconds: 6.0,
        ..Usage::default()
    };
    let c = e.cost(&usage);
    assert_eq!(c.input_audio, d("0.0002")); // 100 × 0.000002, not + 3 s
    assert_eq!(c.input_text, d("0.000005")); // 50 chars × 0.0000001
    assert_eq!(c.input_image, d("0.002")); // 2 × 0.001
    assert_eq!(c.input_video, d("0.00008")); // 4 s × 0.00002
    assert_eq!(c.output_text, d("0.00004")); // 10 × 0.000004, not + 40 chars
    assert_eq!(c.output_audio, d("0.00042")); // 6 s × 0.00007
    assert_eq!(c.total(), d("0.002745"));
}

#[test]
fn video_output_has_its_own_price() {
    // gemini-3.8-live avatars: 1,000 VIDEO output tokens at $1/M, next to 100 text at $4.50/M.
    let usage = Usage {
        response_tokens: 1100,
        response: ByModality {
            text: 100,
            video: 1000,
            ..ByModality::default()
        },
        ..Usage::default()
    };
    let c = builtin().price("gemini-3.8-live", &usage).cost;
    assert_eq!(c.output_text, d("0.00045")); // 100 × 0.0000045
    assert_eq!(c.output_video, d("0.001")); // 1000 × 0.000001
    assert_eq!(c.output(), d("0.00145"));
}

#[test]
fn a_deprecated_model_is_priced_and_logged_once_with_its_successor() {
    let p = builtin();
    let usage = Usage {
        prompt_tokens: 1000,
        ..Usage::default()
    };
    let (_, e) = PriceTable::builtin()
        .lookup("gemini-live-2.5-flash-native-audio")
        .map(|(k, e)| (k.to_string(), e.clone()))
        .unwrap();
    assert_eq!(e.deprecation_date.as_deref(), Some("2026-12-13"));
    assert_eq!(e.successor.as_deref(), Some("gemini-3.8-live"));
    let priced = p.price("gemini-live-2.5-flash-native-audio", &usage);
    assert_eq!(priced.cost.input_text, d("0.0005")); // still priced: 1000 × 0.0000005
    assert!(
        p.warned
            .lock()
            .unwrap()
            .contains("gemini-live-2.5-flash-native-audio")
    );
    // The current model is not remembered as deprecated.
    p.price("gemini-3.8-live", &usage);
    assert!(
        !p.warned
            .lock()
            .unwrap()
            .contains("vertex_ai/gemini-3.8-live")
    );
}

#[test]
fn per_image_price() {
    let e = entry(r#"{"input_cost_per_token": 1e-06, "input_cost_per_image": 1.315e-04}"#);
    let usage = Usage {
        prompt_tokens: 774,
        prompt: ByModality {
            image: 774,
            ..ByModality::default()
        },
        input_images: 3,
        ..Usage::default()
    };
    let c = e.cost(&usage);
    // 774 image tokens at the plain price (no image token price); the per-image price is a
    // second way to price the same images, not used when Google counted their tokens.
    assert_eq!(c.input_image, d("0.000774"));
    let counted_only = Usage {
        input_images: 3,
        ..Usage::default()
    };
    assert_eq!(e.cost(&counted_only).input_image, d("0.0003945")); // 3 × 0.0001315
}

#[test]
fn unknown_model_costs_nothing_and_says_so() {
    let p = builtin();
    let usage = Usage {
        prompt_tokens: 1000,
        response_tokens: 1000,
        ..Usage::default()
    };
    let priced = p.price("gpt-4o-realtime", &usage);
    assert_eq!(priced.entry, None);
    assert_eq!(priced.cost, Cost::default());
    assert_eq!(priced.cost.total(), Decimal::ZERO);
    // Warned once: the model is remembered.
    assert!(p.warned.lock().unwrap().contains("gpt-4o-realtime"));
}

#[test]
fn vertex_ai_prefix_both_ways() {
    let p = builtin();
    let u = Usage::default();
    // The event names the model with the prefix, the table without…
    assert_eq!(
        p.price("vertex_ai/gemini-live-2.5-flash-native-audio", &u)
            .entry
            .as_deref(),
        Some("gemini-live-2.5-flash-native-audio")
    );
    // …and the other way round.
    assert_eq!(
        p.price("gemini-3.8-live", &u).entry.as_deref(),
        Some("vertex_ai/gemini-3.8-live")
    );
}

#[test]
fn resource_path_lookup() {
    let p = builtin();
    let u = Usage {
        prompt_tokens: 1000,
        ..Usage::default()
    };
    for model in [
        "projects/p1/locations/us-central1/publishers/google/models/gemini-live-2.5-flash",
        "publishers/google/models/gemini-live-2.5-flash",
        "models/gemini-live-2.5-flash",
    ] {
        let priced = p.price(model, &u);
        assert_eq!(
            priced.entry.as_deref(),
            Some("gemini-live-2.5-flash"),
            "{model}"
        );
        assert_eq!(priced.cost.input_text, d("0.0005")); // 1000 × 0.0000005
    }
}

#[test]
fn a_realistic_audio_turn_on_a_builtin_model() {
    // 10 s of audio in (320 tokens) + 40 text prompt tokens of which 20 cached;
    // 5 s of audio out (160 tokens) + 12 text tokens of transcript. The built-in entries have
    // no cache price (none in LiteLLM's map), so the cached tokens are billed as prompt.
    let usage = Usage {
        prompt_tokens: 360,
        prompt: ByModality {
            text: 40,
            audio: 320,
            ..ByModality::default()
        },
        cached_tokens: 20,
        cached: ByModality {
            text: 20,
            ..ByModality::default()
        },
        response_tokens: 172,
        response: ByModality {
            text: 12,
            audio: 160,
            ..ByModality::default()
        },
        ..Usage::default()
    };
    let priced = builtin().price("gemini-live-2.5-flash-native-audio", &usage);
    let c = priced.cost;
    assert_eq!(c.input_text, d("0.00002")); // 40 × 0.0000005
    assert_eq!(c.input_audio, d("0.00096")); // 320 × 0.000003
    assert_eq!(c.cached, d("0"));
    assert_eq!(c.output_text, d("0.000024")); // 12 × 0.000002
    assert_eq!(c.output_audio, d("0.00192")); // 160 × 0.000012
    assert_eq!(c.input(), d("0.00098"));
    assert_eq!(c.output(), d("0.001944"));
    assert_eq!(c.total(), d("0.002924"));
}

#[test]
fn user_file_overrides_whole_entries_under_any_name() {
    let user = PriceTable::parse(
        r#"{"vertex_ai/gemini-live-2.5-flash": {"input_cost_per_token": "0.000001"},
            "my-model": {"input_cost_per_token": 2e-06},
            "sample_spec": {"input_cost_per_token": 1},
            "comment": "strings at the top level are skipped"}"#,
    )
    .unwrap();
    let p = Pricing::with_tables(PriceTable::builtin(), user);
    let u = Usage {
        prompt_tokens: 1000,
        prompt: ByModality {
            audio: 1000,
            ..ByModality::default()
        },
        ..Usage::default()
    };
    let priced = p.price("gemini-live-2.5-flash", &u);
    assert_eq!(
        priced.entry.as_deref(),
        Some("vertex_ai/gemini-live-2.5-flash")
    );
    // The override has no audio price and does not inherit the built-in one.
    assert_eq!(priced.cost.input_audio, d("0.001")); // 1000 × 0.000001
    assert_eq!(p.price("my-model", &u).cost.input_audio, d("0.002"));
    assert_eq!(p.price("sample_spec", &u).entry, None);
}

#[test]
fn bad_prices_are_rejected() {
    for json in [
        r#"{"m": {"input_cost_per_token": -1}}"#,
        r#"{"m": {"input_cost_per_token": "cheap"}}"#,
        r#"{"m": {"input_cost_per_token": [1]}}"#,
        r#"[1, 2]"#,
        "not json",
    ] {
        assert!(PriceTable::parse(json).is_err(), "{json} accepted");
    }
}

#[test]
fn reload_replaces_the_file_table_and_keeps_it_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(&path, r#"{"m": {"input_cost_per_token": 1e-06}}"#).unwrap();
    let p = Pricing::load(Some(&path)).unwrap();
    let u = Usage {
        prompt_tokens: 1000,
        ..Usage::default()
    };
    assert_eq!(p.price("m", &u).cost.input_text, d("0.001"));

    std::fs::write(&path, r#"{"m": {"input_cost_per_token": 2e-06}}"#).unwrap();
    assert_eq!(p.reload().unwrap().entries, 1);
    assert_eq!(p.price("m", &u).cost.input_text, d("0.002"));

    std::fs::write(&path, "{ broken").unwrap();
    assert!(p.reload().is_err());
    assert_eq!(p.price("m", &u).cost.input_text, d("0.002"));
    // Built-in entries are still there underneath.
    assert!(p.price("gemini-live-2.5-flash", &u).entry.is_some());
}

#[test]
fn developer_api_names_price_at_the_developer_api_entries() {
    let p = builtin();
    let u = Usage {
        prompt_tokens: 1000,
        ..Usage::default()
    };
    // A Developer API session is recorded as `gemini/ID`: LiteLLM's key for its price.
    let priced = p.price("gemini/gemini-3.8-live", &u);
    assert_eq!(priced.entry.as_deref(), Some("gemini/gemini-3.8-live"));
    assert_eq!(priced.cost.input_text, d("0.00075")); // 1000 × 0.00000075
    // A Vertex session of the same model still finds the Vertex entry first.
    let priced = p.price("gemini-3.8-live", &u);
    assert_eq!(priced.entry.as_deref(), Some("vertex_ai/gemini-3.8-live"));
    for model in [
        "gemini/gemini-2.5-flash-native-audio-latest",
        "gemini/gemini-2.5-flash-native-audio-preview-09-2025",
        "gemini/gemini-live-2.5-flash-preview-native-audio-09-2025",
        "gemini/gemini-3.5-live-translate-preview",
    ] {
        assert_eq!(p.price(model, &u).entry.as_deref(), Some(model));
    }
    // No `gemini/` entry: the bare id, never a `vertex_ai/` entry (Vertex prices are not
    // the Developer API's).
    let priced = p.price("gemini/gemini-live-2.5-flash", &u);
    assert_eq!(priced.entry.as_deref(), Some("gemini-live-2.5-flash"));
    let vertex_only =
        PriceTable::parse(r#"{"vertex_ai/m1": {"input_cost_per_token": 1}}"#).unwrap();
    assert!(vertex_only.lookup("gemini/m1").is_none());
    assert!(vertex_only.lookup("m1").is_some());
}

#[test]
fn a_priced_event_names_the_tables_that_priced_it_even_during_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.json");
    let a = r#"{"m": {"input_cost_per_token": 1e-06}}"#;
    let b = r#"{"m": {"input_cost_per_token": 2e-06}}"#;
    std::fs::write(&path, a).unwrap();
    let p = Arc::new(Pricing::load(Some(&path)).unwrap());
    let (va, vb) = (version_of(a), version_of(b));
    let u = Usage {
        prompt_tokens: 1000,
        ..Usage::default()
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reloads = {
        let (p, done, path) = (p.clone(), done.clone(), path.clone());
        std::thread::spawn(move || {
            for i in 0..500 {
                std::fs::write(&path, if i % 2 == 0 { b } else { a }).unwrap();
                p.reload().unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    // Metering stores `version` with the cost: the two must always belong together (reading
    // `Pricing::version()` after `price` gave thousands of mismatches here).
    let mut checked = 0u64;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let priced = p.price("m", &u);
        let expected = if priced.version == va {
            d("0.001")
        } else {
            assert_eq!(priced.version, vb);
            d("0.002")
        };
        assert_eq!(priced.cost.input_text, expected, "after {checked} events");
        checked += 1;
    }
    reloads.join().unwrap();
}

#[test]
fn a_pricing_file_that_is_huge_or_not_a_file_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(&path, r#"{"m": {"input_cost_per_token": 1e-06}}"#).unwrap();
    let p = Pricing::load(Some(&path)).unwrap();
    // Replaced by something far larger than any price table (sparse: no disk used).
    let huge = dir.path().join("huge");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 * 1024 * 1024 * 1024)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&huge, &path).unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(p.reload(), Err(PricingError::TooLarge { .. })));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // A device that never ends, and a directory.
    for target in [Path::new("/dev/zero"), dir.path()] {
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(target, &path).unwrap();
        assert!(
            matches!(p.reload(), Err(PricingError::NotAFile { .. })),
            "{}",
            target.display()
        );
        assert!(matches!(
            Pricing::load(Some(&path)),
            Err(PricingError::NotAFile { .. })
        ));
    }
    // The prices in force stay.
    let u = Usage {
        prompt_tokens: 1000,
        ..Usage::default()
    };
    assert_eq!(p.price("m", &u).cost.input_text, d("0.001"));
}

#[test]
fn a_reload_names_the_entries_it_left_without_a_price() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(
        &path,
        r#"{"m": {"input_cost_per_token": 1e-06}, "gone": {"input_cost_per_token": 1e-06},
            "gemini-live-2.5-flash": {"input_cost_per_token": 1e-06}}"#,
    )
    .unwrap();
    let p = Pricing::load(Some(&path)).unwrap();
    let u = Usage {
        prompt_tokens: 1000,
        ..Usage::default()
    };
    assert_eq!(p.price("gone", &u).cost.input_text, d("0.001"));
    // "gone" disappears; the Live model falls back to its built-in price.
    std::fs::write(&path, r#"{"m": {"input_cost_per_token": 2e-06}}"#).unwrap();
    assert_eq!(
        p.reload().unwrap(),
        Reloaded {
            entries: 1,
            unpriced: vec!["gone".into()],
        }
    );
    let gone = p.price("gone", &u);
    assert_eq!((gone.entry, gone.cost.total()), (None, Decimal::ZERO));
    assert!(p.price("gemini-live-2.5-flash", &u).entry.is_some());
}

#[test]
fn absurd_counts_and_prices_saturate_instead_of_panicking() {
    // A price table typo (10^10 USD a token) meets counts a buggy upstream sent (u64::MAX in
    // every field): each product overflows `Decimal`, and so would the sums of the
    // components. Pricing must not panic (that would crash the consumer on every redelivery
    // of the message); the cost saturates, and metering refuses to store it (dead letter).
    let e = entry(
        r#"{"input_cost_per_token": "10000000000", "output_cost_per_token": "10000000000",
            "input_cost_per_character": "10000000000"}"#,
    );
    let max = ByModality {
        text: u64::MAX,
        audio: u64::MAX,
        image: u64::MAX,
        video: u64::MAX,
    };
    let u = Usage {
        prompt_tokens: u64::MAX,
        prompt: max,
        response_tokens: u64::MAX,
        response: max,
        tool_use_tokens: u64::MAX,
        tool_use: max,
        thoughts_tokens: u64::MAX,
        input_characters: u64::MAX,
        ..Usage::default()
    };
    let c = e.cost(&u);
    assert_eq!(c.tool_use, Decimal::MAX);
    assert_eq!(c.input(), Decimal::MAX);
    assert_eq!(c.output(), Decimal::MAX);
    assert_eq!(c.total(), Decimal::MAX);
}
