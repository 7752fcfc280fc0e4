//! The management API's OpenAPI 3.1 document, assembled here from one table of calls so that
//! it reads like the module docs' tables. The schemas of the wire types are derived from the
//! types themselves; the envelopes and the answers are closed (`additionalProperties: false`,
//! every field required) so that a field added to or renamed in an answer fails validation.

use utoipa::openapi::path::{HttpMethod, Operation, Parameter, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::tag::Tag;
use utoipa::openapi::{
    AllOf, Array, Components, Content, Header, Info, Object, OpenApi, OpenApiBuilder, Paths, Ref,
    RefOr, Required, Response, Responses, Schema, Type,
};
use utoipa::{PartialSchema, ToSchema};

use super::handlers::SHOWN_ONCE;
use super::request_body::{CreateKey, Rename, Rotate};
use crate::key::Environment;
use crate::lifecycle::{MAX_GRACE_SECONDS, MAX_RESTRICTION_ENTRIES, MAX_SCOPES};
use crate::restriction::{EndpointRule, Restrictions};
use crate::store::KeyInfo;

const JSON: &str = "application/json";
const TAG: &str = "api-keys";

/// A refusal: its response's name in `components/responses`, status, codes and cases.
struct Refusal {
    name: &'static str,
    status: &'static str,
    codes: &'static [&'static str],
    description: &'static str,
    /// Whether `WWW-Authenticate` may come with it.
    www_authenticate: bool,
}

const BAD_REQUEST: Refusal = Refusal {
    name: "BadRequest",
    status: "400",
    codes: &["BAD_REQUEST"],
    description: "The body is not valid: malformed JSON, a content type other than \
        `application/json`, an unknown or missing field, a bad name, no scopes, more than 64 \
        or an unknown scope, metadata over 4096 bytes of JSON, a restriction list over 64 \
        entries, an expiry in the past or after 2262-01-01T00:00:00Z, a grace period over \
        2592000 seconds. The message says which.",
    www_authenticate: false,
};
const UNAUTHORIZED: Refusal = Refusal {
    name: "Unauthorized",
    status: "401",
    codes: &["UNAUTHORIZED"],
    description: "No API key, more than one, or one that is malformed, unknown, revoked, \
        expired or of an environment the server does not accept.",
    www_authenticate: true,
};
const FORBIDDEN: Refusal = Refusal {
    name: "Forbidden",
    status: "403",
    codes: &["FORBIDDEN"],
    description: "The caller's key lacks the `admin` scope (with `WWW-Authenticate`), its \
        tenant is suspended or has no plan, a restriction of the key refuses the request, the \
        key is in its rotation grace period, or the key asked for, or the key to rename, \
        rotate or revoke, reaches beyond the caller's (environment, scopes, restrictions, \
        expiry).",
    www_authenticate: true,
};
const NOT_FOUND: Refusal = Refusal {
    name: "NotFound",
    status: "404",
    codes: &["NOT_FOUND"],
    description: "No such key for the caller's tenant; another tenant's key id answers the \
        same.",
    www_authenticate: false,
};
const KEY_LIMIT_REACHED: Refusal = Refusal {
    name: "KeyLimitReached",
    status: "409",
    codes: &["KEY_LIMIT_REACHED"],
    description: "The tenant has the maximum number of active keys.",
    www_authenticate: false,
};
const ROTATION_CONFLICT: Refusal = Refusal {
    name: "RotationConflict",
    status: "409",
    codes: &["KEY_LIMIT_REACHED", "KEY_ALREADY_ROTATED"],
    description: "`KEY_ALREADY_ROTATED`: the key is in its rotation grace period, already \
        replaced (rotate its successor). `KEY_LIMIT_REACHED`: with a grace period the old key \
        stays active beside its successor, and the tenant has the maximum number of active \
        keys.",
    www_authenticate: false,
};
const PAYLOAD_TOO_LARGE: Refusal = Refusal {
    name: "PayloadTooLarge",
    status: "413",
    codes: &["PAYLOAD_TOO_LARGE"],
    description: "The body is over 65536 bytes.",
    www_authenticate: false,
};
const UNAVAILABLE: Refusal = Refusal {
    name: "ServiceUnavailable",
    status: "503",
    codes: &["SERVICE_UNAVAILABLE"],
    description: "The key store failed or did not answer in time, while authenticating the \
        caller or during the call. Nothing was changed; retry later.",
    www_authenticate: false,
};

const REFUSALS: [Refusal; 8] = [
    BAD_REQUEST,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    KEY_LIMIT_REACHED,
    ROTATION_CONFLICT,
    PAYLOAD_TOO_LARGE,
    UNAVAILABLE,
];

/// Every code of the error envelope. `RATE_LIMITED` is the layer's on other routes: management
/// calls are exempt from the tenant's limits.
const ERROR_CODES: [&str; 9] = [
    "BAD_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
    "KEY_LIMIT_REACHED",
    "KEY_ALREADY_ROTATED",
    "RATE_LIMITED",
    "SERVICE_UNAVAILABLE",
];

/// One call of the management API.
struct Call {
    method: HttpMethod,
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    description: &'static str,
    /// The request body's schema and whether the body is required.
    body: Option<(&'static str, bool)>,
    /// The success status, its description and its body's schema (none for 204).
    success: (&'static str, &'static str, Option<&'static str>),
    refusals: &'static [Refusal],
}

const CALLS: [Call; 6] = [
    Call {
        method: HttpMethod::Post,
        path: "/v1/api-keys",
        operation_id: "createKey",
        summary: "Issue a key",
        description: "Issues a key for the caller's tenant, within the caller's own key's \
            bounds: same environment, scopes the key and its plan grant, restrictions at least \
            as tight, expiry no later. The answer holds the secret, once.",
        body: Some(("CreateKeyRequest", true)),
        success: (
            "201",
            "The key, with its secret: shown once, never again.",
            Some("IssuedKeyResponse"),
        ),
        refusals: &[
            BAD_REQUEST,
            UNAUTHORIZED,
            FORBIDDEN,
            KEY_LIMIT_REACHED,
            PAYLOAD_TOO_LARGE,
            UNAVAILABLE,
        ],
    },
    Call {
        method: HttpMethod::Get,
        path: "/v1/api-keys",
        operation_id: "listKeys",
        summary: "List the keys",
        description: "The caller's tenant's active keys, oldest first.",
        body: None,
        success: ("200", "The active keys.", Some("KeyListResponse")),
        refusals: &[UNAUTHORIZED, FORBIDDEN, UNAVAILABLE],
    },
    Call {
        method: HttpMethod::Get,
        path: "/v1/api-keys/{id}",
        operation_id: "getKey",
        summary: "Get a key",
        description: "One key of the caller's tenant.",
        body: None,
        success: ("200", "The key.", Some("KeyResponse")),
        refusals: &[UNAUTHORIZED, FORBIDDEN, NOT_FOUND, UNAVAILABLE],
    },
    Call {
        method: HttpMethod::Patch,
        path: "/v1/api-keys/{id}",
        operation_id: "renameKey",
        summary: "Rename a key",
        description: "Renames one key of the caller's tenant. The caller renames only keys \
            it could have issued, itself included: a key beyond its own bounds (another \
            environment, wider restrictions, a later expiry, scopes it does not grant) is \
            refused with 403.",
        body: Some(("RenameKeyRequest", true)),
        success: ("200", "The renamed key.", Some("KeyResponse")),
        refusals: &[
            BAD_REQUEST,
            UNAUTHORIZED,
            FORBIDDEN,
            NOT_FOUND,
            PAYLOAD_TOO_LARGE,
            UNAVAILABLE,
        ],
    },
    Call {
        method: HttpMethod::Post,
        path: "/v1/api-keys/{id}/rotate",
        operation_id: "rotateKey",
        summary: "Rotate a key",
        description: "Replaces a key by a new one with the same name, scopes, environment, \
            expiry, metadata and restrictions. The old key stops at once, or after the grace \
            period. The caller rotates only keys it could have issued, itself included: a key \
            beyond its own bounds is refused with 403. The body may be left empty. The answer \
            holds the new secret, once.",
        body: Some(("RotateKeyRequest", false)),
        success: (
            "201",
            "The new key, with its secret: shown once, never again.",
            Some("IssuedKeyResponse"),
        ),
        refusals: &[
            BAD_REQUEST,
            UNAUTHORIZED,
            FORBIDDEN,
            NOT_FOUND,
            ROTATION_CONFLICT,
            PAYLOAD_TOO_LARGE,
            UNAVAILABLE,
        ],
    },
    Call {
        method: HttpMethod::Delete,
        path: "/v1/api-keys/{id}",
        operation_id: "revokeKey",
        summary: "Revoke a key",
        description: "Revokes one key of the caller's tenant: it stops working at once. The \
            caller revokes only keys it could have issued, itself included: a key beyond its \
            own bounds (another environment, wider restrictions, a later expiry, scopes it \
            does not grant) is refused with 403.",
        body: None,
        success: ("204", "Revoked; no body.", None),
        refusals: &[UNAUTHORIZED, FORBIDDEN, NOT_FOUND, UNAVAILABLE],
    },
];

/// The management API's OpenAPI 3.1 document (feature `openapi`): every call of
/// [`router`](super::router) with its request body, every status it answers and the schema of
/// each answer, the error envelope with its codes, and the `x-api-key` and bearer security
/// schemes. The 401, 403 and 503 refusals of the layer in front of the router
/// ([`AuthLayer::management`](crate::AuthLayer::management)) are listed too, as keygate's
/// default [`JsonErrors`](crate::error::JsonErrors) renders them.
///
/// Paths are those of [`router`](super::router); merge the document into a service's own, and
/// serve it wherever the service likes:
///
/// ```
/// use axum::{Router, routing::get};
/// use utoipa::openapi::{InfoBuilder, OpenApiBuilder};
///
/// let mut doc = OpenApiBuilder::new()
///     .info(InfoBuilder::new().title("documents service").version("1.0.0"))
///     .build();
/// doc.merge(keygate::api::openapi());
/// assert!(doc.paths.paths.contains_key("/v1/api-keys/{id}/rotate"));
///
/// let json = doc.to_json().unwrap();
/// let app: Router = Router::new().route(
///     "/openapi.json",
///     get(move || async move { ([("content-type", "application/json")], json) }),
/// );
/// # let _ = app;
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
pub fn openapi() -> OpenApi {
    let mut paths = Paths::new();
    for call in &CALLS {
        paths.add_path_operation(call.path, vec![call.method.clone()], operation(call));
    }
    OpenApiBuilder::new()
        .info(
            Info::builder()
                .title("keygate management API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Issue, list, rename, rotate and revoke the API keys of the caller's tenant. \
                     Every call needs a key with the `admin` scope, sent in `x-api-key` or as \
                     `Authorization: Bearer <key>`.",
                )),
        )
        .paths(paths)
        .components(Some(components()))
        .security(Some([
            SecurityRequirement::new("api_key", ["admin"]),
            SecurityRequirement::new("bearer", ["admin"]),
        ]))
        .tags(Some([Tag::builder()
            .name(TAG)
            .description(Some("The caller's tenant's API keys."))
            .build()]))
        .build()
}

fn operation(call: &Call) -> Operation {
    let (status, description, schema) = call.success;
    let mut success = Response::builder().description(description);
    if let Some(schema) = schema {
        success = success.content(JSON, Content::new(Some(Ref::from_schema_name(schema))));
    }
    if schema == Some("IssuedKeyResponse") {
        success = success.header(
            "Cache-Control",
            Header::builder()
                .schema(constant(Type::String, "no-store"))
                .description(Some("The answer holds a secret: no cache may keep it."))
                .build(),
        );
    }
    let mut responses = Responses::builder().response(status, success);
    for refusal in call.refusals {
        responses = responses.response(refusal.status, Ref::from_response_name(refusal.name));
    }
    let mut operation = Operation::builder()
        .tag(TAG)
        .operation_id(Some(call.operation_id))
        .summary(Some(call.summary))
        .description(Some(call.description))
        .responses(responses);
    if call.path.contains("{id}") {
        operation = operation.parameter(
            Parameter::builder()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The key's id."))
                .schema(Some(Object::with_type(Type::String))),
        );
    }
    if let Some((schema, required)) = call.body {
        operation = operation.request_body(Some(
            RequestBody::builder()
                .required(Some(if required {
                    Required::True
                } else {
                    Required::False
                }))
                .content(JSON, Content::new(Some(Ref::from_schema_name(schema))))
                .build(),
        ));
    }
    operation.build()
}

fn components() -> Components {
    let mut components = Components::builder()
        .schema(Environment::name(), Environment::schema())
        .schema(EndpointRule::name(), EndpointRule::schema())
        .schema(Restrictions::name(), restrictions())
        .schema(KeyInfo::name(), closed(KeyInfo::schema()))
        .schema("IssuedKey", issued_key())
        .schema(CreateKey::name(), create_key())
        .schema(Rename::name(), name_limits(Rename::schema()))
        .schema(Rotate::name(), rotate())
        .schema(
            "KeyResponse",
            success(Ref::from_schema_name("KeyInfo"), None),
        )
        .schema(
            "KeyListResponse",
            success(Array::new(Ref::from_schema_name("KeyInfo")), None),
        )
        .schema(
            "IssuedKeyResponse",
            success(Ref::from_schema_name("IssuedKey"), Some(SHOWN_ONCE)),
        )
        .schema("ErrorCode", error_code())
        .schema("ErrorEnvelope", error_envelope())
        .security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "The API key.",
            ))),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The API key as `Authorization: Bearer <key>`."))
                    .build(),
            ),
        );
    for refusal in &REFUSALS {
        components = components.response(refusal.name, refused(refusal));
    }
    components.build()
}

/// The object inside `schema`, which the derives and the builders here always make.
fn object(schema: &mut RefOr<Schema>) -> &mut Object {
    match schema {
        RefOr::T(Schema::Object(object)) => object,
        _ => unreachable!("the schemas built here are objects"),
    }
}

/// The schema with every property required and no other allowed: an answer, exactly.
fn closed(mut schema: RefOr<Schema>) -> RefOr<Schema> {
    let object = object(&mut schema);
    object.required = object.properties.keys().cloned().collect();
    object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    schema
}

/// A key with its secret: the fields of `KeyInfo` and `key`.
fn issued_key() -> RefOr<Schema> {
    let mut schema = KeyInfo::schema();
    let key = Object::builder()
        .schema_type(Type::String)
        .description(Some("The secret: shown once, never again."));
    let object = object(&mut schema);
    object.description = Some("An API key with its secret, as issued.".into());
    object.properties.insert("key".into(), key.into());
    closed(schema)
}

/// Limits that the derive cannot take from the crate's constants.
fn restrictions() -> RefOr<Schema> {
    let mut schema = Restrictions::schema();
    for list in ["ip_ranges", "referrers", "endpoints"] {
        if let Some(RefOr::T(Schema::Array(array))) = object(&mut schema).properties.get_mut(list) {
            array.max_items = Some(MAX_RESTRICTION_ENTRIES);
        }
    }
    schema
}

fn create_key() -> RefOr<Schema> {
    let mut schema = name_limits(CreateKey::schema());
    if let Some(RefOr::T(Schema::Array(scopes))) = object(&mut schema).properties.get_mut("scopes")
    {
        scopes.min_items = Some(1);
        scopes.max_items = Some(MAX_SCOPES);
    }
    schema
}

/// A name is at least one character; its longest length counts after trimming, which JSON
/// Schema cannot say, so only the description does.
fn name_limits(mut schema: RefOr<Schema>) -> RefOr<Schema> {
    if let Some(RefOr::T(Schema::Object(name))) = object(&mut schema).properties.get_mut("name") {
        name.min_length = Some(1);
    }
    schema
}

fn rotate() -> RefOr<Schema> {
    let mut schema = Rotate::schema();
    if let Some(RefOr::T(Schema::Object(grace))) = object(&mut schema)
        .properties
        .get_mut("grace_period_seconds")
    {
        grace.minimum = Some(0.into());
        grace.maximum = Some(MAX_GRACE_SECONDS.into());
    }
    schema
}

/// `{"success":true,"data":…}`, with `message` when given.
fn success(data: impl Into<RefOr<Schema>>, message: Option<&str>) -> RefOr<Schema> {
    let mut object = Object::builder()
        .property("success", constant(Type::Boolean, true))
        .property("data", data);
    if let Some(message) = message {
        object = object.property("message", constant(Type::String, message));
    }
    closed(RefOr::T(Schema::Object(object.build())))
}

fn constant(schema_type: Type, value: impl Into<serde_json::Value>) -> Object {
    Object::builder()
        .schema_type(schema_type)
        .enum_values(Some([value.into()]))
        .build()
}

fn error_code() -> Object {
    Object::builder()
        .schema_type(Type::String)
        .description(Some(
            "What went wrong, for programs; `RATE_LIMITED` is never the answer of a management \
             call, which is exempt from the tenant's limits.",
        ))
        .enum_values(Some(ERROR_CODES))
        .build()
}

/// `{"success":false,"error":{"code","message"}}`.
fn error_envelope() -> RefOr<Schema> {
    let error = closed(RefOr::T(Schema::Object(
        Object::builder()
            .property("code", Ref::from_schema_name("ErrorCode"))
            .property(
                "message",
                Object::builder()
                    .schema_type(Type::String)
                    .description(Some("What went wrong, for people.")),
            )
            .build(),
    )));
    closed(RefOr::T(Schema::Object(
        Object::builder()
            .description(Some("A refused call."))
            .property("success", constant(Type::Boolean, false))
            .property("error", error)
            .build(),
    )))
}

/// A refusal's response: the error envelope with the refusal's codes only.
fn refused(refusal: &Refusal) -> Response {
    let codes = Object::builder().property(
        "error",
        Object::builder().property(
            "code",
            Object::builder()
                .schema_type(Type::String)
                .enum_values(Some(refusal.codes.iter().copied())),
        ),
    );
    let schema = AllOf::builder()
        .item(Ref::from_schema_name("ErrorEnvelope"))
        .item(codes);
    let mut response = Response::builder()
        .description(refusal.description)
        .content(JSON, Content::new(Some(schema)))
        .header(
            "Cache-Control",
            Header::builder()
                .schema(constant(Type::String, "no-store"))
                .description(Some("Every refusal is `no-store`."))
                .build(),
        );
    if refusal.www_authenticate {
        response = response.header(
            "WWW-Authenticate",
            Header::builder()
                .schema(Object::with_type(Type::String))
                .description(Some(match refusal.status {
                    "401" => "The bearer challenge (RFC 6750).",
                    _ => "With `error=\"insufficient_scope\"` when the key lacks `admin`.",
                }))
                .build(),
        );
    }
    response.build()
}
