//! `mode=http`: one outgoing GET through `wasi:http/outgoing-handler`, blocking until the
//! response head arrives. Natively there is no `wasi:http`, so it always fails.

/// GETs `url` and returns the response status.
#[cfg(target_arch = "wasm32")]
pub fn get(url: &str) -> Result<u16, String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};

    let (scheme, authority, path) = split_url(url)?;
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_method(&Method::Get)
        .map_err(|()| "invalid method")?;
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "invalid scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "invalid authority")?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| "invalid path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| e.to_string())?;
    {
        // The pollable is a child of `pending` and must be dropped before it.
        let ready = pending.subscribe();
        ready.block();
    }
    let response = pending
        .get()
        .ok_or("response not ready after waiting")?
        .map_err(|()| "response already taken")?
        .map_err(|e| e.to_string())?;
    Ok(response.status())
}

/// GETs `url` and returns the response status.
#[cfg(not(target_arch = "wasm32"))]
pub fn get(url: &str) -> Result<u16, String> {
    split_url(url)?;
    Err("wasi:http is only available inside a component".to_string())
}

/// Splits `http(s)://authority/path?query` into its scheme, authority and path with query.
pub fn split_url(url: &str) -> Result<(&str, &str, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not an absolute URL: {url}"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported scheme `{scheme}`"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])), // `?query` without a path
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() {
        return Err(format!("no host in URL: {url}"));
    }
    Ok((scheme, authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_parts() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a/b?c=d"),
            Ok(("http", "127.0.0.1:8080", "/a/b?c=d".into()))
        );
        assert_eq!(
            split_url("https://example.com"),
            Ok(("https", "example.com", "/".into()))
        );
        assert_eq!(split_url("http://h?q=1"), Ok(("http", "h", "/?q=1".into())));
        assert!(split_url("ftp://x/").is_err());
        assert!(split_url("http:///path").is_err());
        assert!(split_url("example.com").is_err());
    }
}
