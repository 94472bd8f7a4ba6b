//! Values given on the command line or in workflow files.

/// `30s`, `1m30s`, `250ms` (humantime) into milliseconds; a bare number is seconds.
pub fn duration_ms(s: &str) -> Result<u64, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return secs
            .checked_mul(1000)
            .ok_or_else(|| format!("duration {s:?} is too long"));
    }
    humantime::parse_duration(s)
        .map(|d| d.as_millis() as u64)
        .map_err(|e| format!("bad duration {s:?}: {e} (try 30s, 5m, 1h30m)"))
}

/// The sandbox a job asks for: `--sandbox` (or a workflow job's `sandbox:`) and the
/// container fields. An image alone means `docker`; the container fields without it are
/// refused, as is `docker` without an image.
pub fn sandbox(
    name: Option<&str>,
    image: Option<&str>,
    pull: bool,
    user: Option<&str>,
) -> Result<
    (
        cathedral_api::v1::Sandbox,
        Option<cathedral_api::v1::DockerSpec>,
    ),
    String,
> {
    use cathedral_api::v1::{DockerSpec, Sandbox};
    let kind = match (name, image) {
        (None | Some("auto"), None) => Sandbox::Default,
        (Some("process"), None) => Sandbox::Process,
        (Some("bubblewrap" | "bwrap"), None) => Sandbox::Bubblewrap,
        (None | Some("docker"), Some(_)) => Sandbox::Docker,
        (Some("docker"), None) => return Err("sandbox docker needs an image (--image)".into()),
        (Some(s @ ("auto" | "process" | "bubblewrap" | "bwrap")), Some(_)) => {
            return Err(format!("an image runs in the docker sandbox, not {s}"))
        }
        (Some(s), _) => {
            return Err(format!(
                "unknown sandbox {s:?} (auto, process, bubblewrap or docker)"
            ))
        }
    };
    if kind != Sandbox::Docker {
        if pull || user.is_some() {
            return Err("pull and user apply to the docker sandbox only (give an image)".into());
        }
        return Ok((kind, None));
    }
    Ok((
        kind,
        Some(DockerSpec {
            image: image.unwrap_or_default().to_string(),
            pull,
            user: user.unwrap_or_default().to_string(),
        }),
    ))
}

/// `512`, `64K`, `512M`, `2G` (binary units; `Ki`, `Mi`, `Gi` too) into bytes.
pub fn bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?} (try 512M, 2G)"))?;
    let mult: u64 = match unit
        .trim()
        .trim_end_matches(['i', 'B'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("bad size unit in {s:?} (K, M, G, T)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// CPU as cores (`0.5`, `2`) or millicores (`500m`) into millicores.
pub fn cpu_millis(s: &str) -> Result<u32, String> {
    if let Some(m) = s.strip_suffix('m') {
        return m
            .parse()
            .map_err(|_| format!("bad CPU amount {s:?} (try 0.5 or 500m)"));
    }
    let cores: f64 = s
        .parse()
        .map_err(|_| format!("bad CPU amount {s:?} (try 0.5 or 500m)"))?;
    if !(0.0..=1_000_000.0).contains(&cores) {
        return Err(format!("CPU amount {s:?} out of range"));
    }
    Ok((cores * 1000.0).round() as u32)
}

/// `key=value`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names_and_container_fields() {
        use cathedral_api::v1::Sandbox;
        assert_eq!(
            sandbox(None, None, false, None).unwrap(),
            (Sandbox::Default, None)
        );
        assert_eq!(
            sandbox(Some("bwrap"), None, false, None).unwrap().0,
            Sandbox::Bubblewrap
        );
        let (kind, d) = sandbox(None, Some("busybox"), true, Some("65534")).unwrap();
        assert_eq!(kind, Sandbox::Docker);
        let d = d.unwrap();
        assert_eq!(
            (d.image.as_str(), d.pull, d.user.as_str()),
            ("busybox", true, "65534")
        );
        for (name, image, pull, user, want) in [
            (Some("docker"), None, false, None, "needs an image"),
            (Some("process"), Some("busybox"), false, None, "not process"),
            (None, None, true, None, "docker sandbox only"),
            (None, None, false, Some("1"), "docker sandbox only"),
            (Some("vm"), None, false, None, "unknown sandbox"),
        ] {
            let e = sandbox(name, image, pull, user).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn values() {
        assert_eq!(duration_ms("30s"), Ok(30_000));
        assert_eq!(duration_ms("1m30s"), Ok(90_000));
        assert_eq!(duration_ms("45"), Ok(45_000));
        assert!(duration_ms("soon").is_err());
        assert_eq!(bytes("512M"), Ok(512 << 20));
        assert_eq!(bytes("2Gi"), Ok(2 << 30));
        assert_eq!(bytes("100"), Ok(100));
        assert!(bytes("5X").is_err());
        assert_eq!(cpu_millis("0.5"), Ok(500));
        assert_eq!(cpu_millis("250m"), Ok(250));
        assert!(cpu_millis("lots").is_err());
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(key_value("=x").is_err());
    }
}
