//! gRPC status codes as a policy names them, and the mappings between HTTP and gRPC statuses
//! that an abort uses when it gives only one of `httpStatus` and `grpcStatus`.
//!
//! Names are the upper-case ones of grpc/grpc `doc/statuscodes.md`, as Istio's VirtualService
//! `abort.grpcStatus` takes them. The mappings are gRPC's own (`doc/http-grpc-status-mapping.md`
//! for HTTP to gRPC; the reverse as Envoy's `Grpc::Utility::grpcToHttpStatus` does it), so a
//! gRPC client sees what it would see from a proxy that failed the same way.

/// Every gRPC error code by name; `OK` is not an abort.
const CODES: [(&str, u8); 16] = [
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];

/// The code of an error name (`UNAVAILABLE` is 14).
pub fn code_of(name: &str) -> Option<u8> {
    CODES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, code)| *code)
}

/// Every accepted name, for error messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    CODES.iter().map(|(name, _)| *name)
}

/// The gRPC status a gRPC client gets for an HTTP status.
pub fn from_http(status: u16) -> u8 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// The HTTP status an HTTP client gets for a gRPC code.
pub fn to_http(code: u8) -> u16 {
    match code {
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_mappings() {
        assert_eq!(code_of("UNAVAILABLE"), Some(14));
        assert_eq!(code_of("unavailable"), None);
        assert_eq!(code_of("OK"), None);
        assert_eq!(names().count(), 16);
        assert_eq!(from_http(503), 14);
        assert_eq!(from_http(500), 2);
        assert_eq!(to_http(14), 503);
        assert_eq!(to_http(4), 504);
        // Every code maps to an abort status the model accepts.
        for (_, code) in CODES {
            assert!((200..=599).contains(&to_http(code)), "{code}");
        }
    }
}
