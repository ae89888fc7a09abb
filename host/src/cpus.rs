//! CPU lists as sysfs writes them (`0-3,8,10-11`).

/// The CPUs in a sysfs list, e.g. `/sys/devices/system/cpu/online`.
pub fn parse_list(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("not a CPU number: {s:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("empty CPU range {part:?}"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_single_cpus() {
        assert_eq!(
            parse_list("0-3,8,10-11\n").unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_list("0").unwrap(), [0]);
        assert_eq!(parse_list("").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_list("0-x").is_err());
        assert!(parse_list("3-1").is_err());
    }
}
