//! The admin endpoint that switches faults at runtime, behind a bearer
//! token.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Chaos, Fault};

/// Shortest accepted token: a guessable switch is an outage switch.
const MIN_TOKEN_LEN: usize = 16;

/// The token given to [`router`] is too short to guard a fault switch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the chaos endpoint token must be at least {MIN_TOKEN_LEN} characters, got {0}")]
pub struct WeakToken(usize);

#[derive(Clone)]
struct Switches {
    token: String,
    all: Vec<Chaos>,
}

/// `GET /chaos` lists the switches and their faults; `GET`, `PUT` (body:
/// the fault syntax) and `DELETE` on `/chaos/{name}` read, set and clear
/// one. Every request needs `Authorization: Bearer <token>` (401
/// otherwise). Serve it on an admin port, not the public one.
///
/// # Errors
///
/// [`WeakToken`] for a token shorter than 16 characters.
pub fn router(
    token: impl Into<String>,
    switches: impl IntoIterator<Item = Chaos>,
) -> Result<Router, WeakToken> {
    let token = token.into();
    if token.len() < MIN_TOKEN_LEN {
        return Err(WeakToken(token.len()));
    }
    let state = Switches {
        token,
        all: switches.into_iter().collect(),
    };
    Ok(Router::new()
        .route("/chaos", get(list))
        .route("/chaos/{name}", get(show).put(set).delete(clear))
        .with_state(state))
}

/// Why a request was not served.
enum Refusal {
    Unauthorized,
    Unknown(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required\n",
            )
                .into_response(),
            Self::Unknown(name) => (
                StatusCode::NOT_FOUND,
                format!("no chaos switch named {name:?}\n"),
            )
                .into_response(),
        }
    }
}

/// Constant-time comparison of the presented token.
fn authorized(state: &Switches, headers: &HeaderMap) -> Result<(), Refusal> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    let expected = state.token.as_bytes();
    let mut diff = presented.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        diff |= usize::from(byte ^ presented.get(i).copied().unwrap_or(0));
    }
    if diff == 0 {
        Ok(())
    } else {
        Err(Refusal::Unauthorized)
    }
}

/// The switch `name`, for an authorized request.
fn switch<'a>(state: &'a Switches, headers: &HeaderMap, name: &str) -> Result<&'a Chaos, Refusal> {
    authorized(state, headers)?;
    state
        .all
        .iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| Refusal::Unknown(name.to_owned()))
}

fn line(chaos: &Chaos) -> String {
    format!("{}: {}\n", chaos.name(), chaos.fault())
}

async fn list(State(state): State<Switches>, headers: HeaderMap) -> Result<String, Refusal> {
    authorized(&state, &headers)?;
    Ok(state.all.iter().map(line).collect())
}

async fn show(
    State(state): State<Switches>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<String, Refusal> {
    Ok(line(switch(&state, &headers, &name)?))
}

async fn set(
    State(state): State<Switches>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Refusal> {
    let chaos = switch(&state, &headers, &name)?;
    Ok(match body.parse::<Fault>() {
        Ok(fault) => {
            chaos.set(fault);
            line(chaos).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    })
}

async fn clear(
    State(state): State<Switches>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<String, Refusal> {
    let chaos = switch(&state, &headers, &name)?;
    chaos.clear();
    Ok(line(chaos))
}
