//! Writes the CRD YAML of every kind to a folder (default `crds/generated`), or checks that the
//! files there are up to date (`--check`, exit 1 on drift).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/generated"));
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [DIR]");
                return ExitCode::SUCCESS;
            }
            _ => dir = PathBuf::from(arg),
        }
    }
    let mut drift = false;
    for (file, crd) in power_crds::crds() {
        let path = dir.join(file);
        let text = match power_crds::crd_yaml(&crd) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("crdgen: {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                eprintln!(
                    "crdgen: {} is out of date; run `cargo run -p power-crds --bin crdgen`",
                    path.display()
                );
                drift = true;
            }
        } else if let Err(e) = std::fs::write(&path, text) {
            eprintln!("crdgen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if drift {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
