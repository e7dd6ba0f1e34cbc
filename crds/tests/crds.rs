//! The checked-in CRD YAML matches the types, and the AttestationPolicy mirror converts to and
//! from `power_attest::Policy` without losing a field.

use power_crds::AttestationPolicySpec;
use power_crds::attestation_policy::Enforcement;

#[test]
fn generated_yaml_is_up_to_date() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("generated");
    for (file, crd) in power_crds::crds() {
        let want = power_crds::crd_yaml(&crd).expect("yaml");
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            have == want,
            "crds/generated/{file} is stale: run `cargo run -p power-crds --bin crdgen`"
        );
    }
}

const M: &str = "abababababababababababababababababababababababababababababababababababababababababababababababab";
const D: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

/// Every field of the verifier's policy, set to a non-default value.
fn full_policy_json() -> serde_json::Value {
    let chip = "cd".repeat(64);
    serde_json::json!({
        "enforcement": "Audit",
        "allowSimulated": true,
        "referenceValueSets": [
            {"name": "snp", "snp": {"measurements": [M], "minimumTCB": {"bootloader": 1, "tee": 2, "snp": 3, "microcode": 4, "fmc": 5},
              "guestPolicy": {"debug": true, "migrateMA": true}, "vmpl": 2, "chipIDs": [chip]}},
            {"tdx": {"mrTd": [M], "rtmr": {"rtmr0": [M], "rtmr1": [M], "rtmr2": [M], "rtmr3": [M]},
              "tdAttributes": {"debug": true, "septVeDisable": false}, "mrServiceTd": [M], "acceptedTcbStatus": ["UpToDate", "OutOfDate"]}},
            {"simulated": {"measurements": [M]}}
        ],
        "freshness": {"reattestInterval": "30s", "maxEvidenceAge": "10s"},
        "collateral": {"amdKdsURL": "https://kds.example", "intelPcsURL": "https://pcs.example"},
        "denyList": {"measurements": [M], "modelSha256": [D]}
    })
}

#[test]
fn mirror_round_trips_every_policy_field() {
    let policy: power_attest::Policy =
        serde_json::from_value(full_policy_json()).expect("power-attest parses the full policy");
    // power-attest -> CRD spec -> power-attest: equal, so the mirror lacks no field.
    let spec: AttestationPolicySpec =
        serde_json::from_value(serde_json::to_value(&policy).expect("json")).expect("spec");
    assert_eq!(spec.enforcement, Enforcement::Audit);
    assert_eq!(spec.to_policy().expect("converts"), policy);
    // And the spec's own JSON is what power-attest (deny_unknown_fields) reads: no extra field.
    assert_eq!(
        serde_json::to_value(&spec).expect("json"),
        serde_json::to_value(&policy).expect("json")
    );
}

#[test]
fn defaults_match_the_verifier() {
    let spec: AttestationPolicySpec = serde_json::from_str("{}").expect("empty spec");
    assert_eq!(
        spec.to_policy().expect("converts"),
        power_attest::Policy::default()
    );
}

#[test]
fn conversion_reports_the_verifier_error() {
    let mut json = full_policy_json();
    json["freshness"]["reattestInterval"] = "soon".into();
    let spec: AttestationPolicySpec = serde_json::from_value(json).expect("spec");
    let err = spec.to_policy().expect_err("bad duration").to_string();
    assert!(err.contains("freshness.reattestInterval"), "{err}");
}

#[test]
fn tee_kinds_follow_the_reference_sets() {
    use power_attest::TeeKind;
    let spec: AttestationPolicySpec = serde_json::from_value(full_policy_json()).expect("spec");
    assert_eq!(
        spec.tee_kinds(),
        vec![TeeKind::SevSnp, TeeKind::Tdx, TeeKind::Simulated]
    );
    assert!(AttestationPolicySpec::default().tee_kinds().is_empty());
}

#[test]
fn crd_names_and_subresources() {
    use kube::CustomResourceExt;
    let crd = power_crds::InferenceModel::crd();
    assert_eq!(crd.spec.names.short_names, Some(vec!["pim".to_string()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["a3s".to_string()]));
    let v = &crd.spec.versions[0];
    let scale = v
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .expect("scale");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let cols: Vec<_> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.priority.unwrap_or(0)))
        .collect();
    assert_eq!(
        cols,
        [
            ("Model", 0),
            ("Ready", 0),
            ("Reason", 0),
            ("Replicas", 0),
            ("Attested", 0),
            ("Age", 0),
            ("Digest", 1),
            ("TEE", 1),
            ("Policy", 1),
            ("URL", 1)
        ]
    );
    let pol = power_crds::AttestationPolicy::crd();
    assert_eq!(pol.spec.names.short_names, Some(vec!["attpol".to_string()]));
}
