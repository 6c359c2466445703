//! Compiles the `.proto` files without a system `protoc`.
//!
//! `protox` (a protobuf compiler in Rust) parses the files into a
//! `FileDescriptorSet`; `tonic-prost-build` generates the messages, clients
//! and servers from it. The encoded descriptor set, imports and comments
//! included, is also written to `OUT_DIR` for `FILE_DESCRIPTOR_SET` (gRPC
//! reflection).
//!
//! `prost-build` escapes every `[`/`]` in comments, inside code spans too,
//! where rustdoc then shows the backslash; the last step undoes that inside
//! code spans, so `["hello"]` in a `.proto` comment reads the same in rustdoc.

use std::{env, error::Error, fs, path::PathBuf};

/// The files to compile, relative to the crate root (the include path).
const PROTOS: &[&str] = &[
    "socketio_gateway/common/v1/payload.proto",
    "socketio_gateway/admin/v1/admin.proto",
    "socketio_gateway/hooks/v1/hooks.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=socketio_gateway");

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS.iter().map(|proto| root.join(proto)))?;

    // Imports and comments stay in the embedded set, so a reflection client
    // can resolve `google.protobuf.Timestamp` and show the documentation.
    fs::write(
        out_dir.join("socketio_gateway_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // The imported well-known types stay in the set given to the generator
    // (it needs every message to derive traits), but the generated code
    // refers to `prost-types` for them, not to a copy of its own.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;

    for entry in fs::read_dir(&out_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            let generated = fs::read_to_string(&path)?;
            let cleaned = unescape_brackets_in_doc_code(&generated);
            if cleaned != generated {
                fs::write(&path, cleaned)?;
            }
        }
    }

    Ok(())
}

/// Removes the backslash before `[` and `]` inside the code spans of `///`
/// comments. A code span may continue on the next doc line; a blank doc line
/// or a line of code ends it.
fn unescape_brackets_in_doc_code(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut in_code = false;
    for line in source.split_inclusive('\n') {
        let Some(doc) = line.trim_start().strip_prefix("///") else {
            in_code = false;
            out.push_str(line);
            continue;
        };
        out.push_str(&line[..line.len() - doc.len()]);
        let mut chars = doc.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '`' => in_code = !in_code,
                '\\' if in_code && matches!(chars.peek(), Some('[' | ']')) => continue,
                _ => {}
            }
            out.push(c);
        }
        if doc.trim().is_empty() {
            in_code = false;
        }
    }
    out
}
