//! The embedded descriptor set: it decodes, it holds both services with every
//! rpc, and every service, rpc, message and field of ours is documented.

use gateway_proto::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet, ServiceDescriptorProto};

const ADMIN_FILE: &str = "socketio_gateway/admin/v1/admin.proto";
const HOOKS_FILE: &str = "socketio_gateway/hooks/v1/hooks.proto";
const COMMON_FILE: &str = "socketio_gateway/common/v1/payload.proto";

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

fn file<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a FileDescriptorProto {
    set.file
        .iter()
        .find(|file| file.name() == name)
        .unwrap_or_else(|| panic!("{name} is in the descriptor set"))
}

fn only_service(file: &FileDescriptorProto) -> &ServiceDescriptorProto {
    assert_eq!(
        file.service.len(),
        1,
        "{} declares one service",
        file.name()
    );
    &file.service[0]
}

/// `(rpc, input type, output type)` of every rpc of a service, in order.
fn rpcs(service: &ServiceDescriptorProto) -> Vec<(String, String, String)> {
    service
        .method
        .iter()
        .map(|rpc| {
            (
                rpc.name().to_owned(),
                rpc.input_type().to_owned(),
                rpc.output_type().to_owned(),
            )
        })
        .collect()
}

/// The same for rpcs named `X` taking `XRequest` and returning `XResponse`.
fn conventional_rpcs(package: &str, names: &[&str]) -> Vec<(String, String, String)> {
    names
        .iter()
        .map(|rpc| {
            (
                (*rpc).to_owned(),
                format!(".{package}.{rpc}Request"),
                format!(".{package}.{rpc}Response"),
            )
        })
        .collect()
}

#[test]
fn holds_our_files_and_their_imports() {
    let set = descriptor_set();
    let names: Vec<&str> = set.file.iter().map(|file| file.name()).collect();
    for name in [
        COMMON_FILE,
        ADMIN_FILE,
        HOOKS_FILE,
        "google/protobuf/timestamp.proto",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert_eq!(
        file(&set, COMMON_FILE).package(),
        "socketio_gateway.common.v1"
    );
    assert_eq!(
        file(&set, ADMIN_FILE).package(),
        "socketio_gateway.admin.v1"
    );
    assert_eq!(
        file(&set, HOOKS_FILE).package(),
        "socketio_gateway.hooks.v1"
    );
}

#[test]
fn admin_service_has_every_rpc() {
    let set = descriptor_set();
    let admin = only_service(file(&set, ADMIN_FILE));
    assert_eq!(admin.name(), "Admin");
    assert_eq!(
        rpcs(admin),
        conventional_rpcs(
            "socketio_gateway.admin.v1",
            &[
                "Emit",
                "EmitWithAck",
                "JoinRooms",
                "LeaveRooms",
                "DisconnectSockets",
                "FetchSockets",
                "ListRooms",
                "ClusterInfo",
            ],
        )
    );
}

#[test]
fn hooks_service_has_every_rpc() {
    let set = descriptor_set();
    let hooks = only_service(file(&set, HOOKS_FILE));
    assert_eq!(hooks.name(), "Hooks");
    assert_eq!(
        rpcs(hooks),
        conventional_rpcs(
            "socketio_gateway.hooks.v1",
            &["OnConnect", "OnEvent", "OnDisconnect"],
        )
    );
}

#[test]
fn payload_is_shared_by_both_packages() {
    let set = descriptor_set();
    for name in [ADMIN_FILE, HOOKS_FILE] {
        assert!(
            file(&set, name)
                .dependency
                .iter()
                .any(|dependency| dependency == COMMON_FILE),
            "{name} imports {COMMON_FILE}"
        );
    }
}

/// Every service, rpc, message, oneof and field in our files has a leading
/// comment: the `.proto` files are the API reference, and reflection clients
/// show these comments.
#[test]
fn every_element_is_documented() {
    // Field numbers of `FileDescriptorProto`, `DescriptorProto` and
    // `ServiceDescriptorProto`, which make up a source location's path.
    const MESSAGE_TYPE: i32 = 4;
    const SERVICE: i32 = 6;
    const FIELD: i32 = 2;
    const ONEOF_DECL: i32 = 8;
    const METHOD: i32 = 2;

    let set = descriptor_set();
    let mut undocumented = Vec::new();
    for name in [COMMON_FILE, ADMIN_FILE, HOOKS_FILE] {
        let file = file(&set, name);
        let info = file
            .source_code_info
            .as_ref()
            .expect("source info is kept in the embedded set");
        let documented = |path: &[i32]| {
            info.location.iter().any(|location| {
                location.path == path && !location.leading_comments().trim().is_empty()
            })
        };
        let mut check = |path: Vec<i32>, what: String| {
            if !documented(&path) {
                undocumented.push(format!("{name}: {what}"));
            }
        };

        for (m, message) in (0..).zip(&file.message_type) {
            check(vec![MESSAGE_TYPE, m], format!("message {}", message.name()));
            for (f, field) in (0..).zip(&message.field) {
                check(
                    vec![MESSAGE_TYPE, m, FIELD, f],
                    format!("field {}.{}", message.name(), field.name()),
                );
            }
            for (o, oneof) in (0..).zip(&message.oneof_decl) {
                check(
                    vec![MESSAGE_TYPE, m, ONEOF_DECL, o],
                    format!("oneof {}.{}", message.name(), oneof.name()),
                );
            }
        }
        for (s, service) in (0..).zip(&file.service) {
            check(vec![SERVICE, s], format!("service {}", service.name()));
            for (r, rpc) in (0..).zip(&service.method) {
                check(
                    vec![SERVICE, s, METHOD, r],
                    format!("rpc {}.{}", service.name(), rpc.name()),
                );
            }
        }
    }
    assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
}
