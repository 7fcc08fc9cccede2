//! Which shard a Stack or a repository belongs to, with `--shards N`.
//!
//! Pure: a stable hash (FNV-1a, fixed by its specification, unlike std's
//! `DefaultHasher`) fed to Lamping and Veach's jump consistent hash, so every
//! replica and every version agrees, and going from N to N+1 shards moves only
//! about 1/(N+1) of the stacks.

/// The label that carries a Stack's shard, and the shard of every object it owns,
/// so that a replica can watch just its shards by label selector.
pub const SHARD_LABEL: &str = "stackd.dev/shard";

/// The Lease that grants shard `shard`.
pub fn lease_name(shard: u32) -> String {
    format!("stackd-shard-{shard}")
}

/// The shard of the Stack `namespace/name`.
pub fn of_stack(namespace: &str, name: &str, shards: u32) -> u32 {
    jump(fnv1a(format!("{namespace}/{name}").as_bytes()), shards)
}

/// The shard whose holder runs a repository's Git → Stack sync.
pub fn of_repository(repository: &str, shards: u32) -> u32 {
    jump(fnv1a(repository.as_bytes()), shards)
}

/// The label selector of one shard's objects.
pub fn selector(shard: u32) -> String {
    format!("{SHARD_LABEL}={shard}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Jump consistent hash ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014).
fn jump(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let (mut b, mut j) = (-1_i64, 0_i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1_u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    // `b` is in 0..buckets, which fits a u32.
    b as u32
}

/// How many shards one replica should hold: an even share of `shards` among
/// `replicas` live replicas, rounded up so that every shard finds a holder.
pub fn fair_share(shards: u32, replicas: usize) -> u32 {
    let replicas = u32::try_from(replicas.max(1)).unwrap_or(u32::MAX);
    shards.div_ceil(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed_across_versions_and_replicas() {
        // Pinned: changing these moves every stack to another shard on upgrade.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let shards: Vec<u32> = ["apps/shop", "apps/blog", "team-a/api", "team-b/db"]
            .iter()
            .map(|key| {
                let (namespace, name) = key.split_once('/').unwrap();
                of_stack(namespace, name, 4)
            })
            .collect();
        assert_eq!(shards, vec![0, 0, 1, 1]);
    }

    #[test]
    fn stacks_spread_evenly_over_the_shards() {
        let mut counts = [0_u32; 4];
        for i in 0..10_000 {
            counts[of_stack("apps", &format!("stack-{i}"), 4) as usize] += 1;
        }
        for count in counts {
            assert!((2_300..=2_700).contains(&count), "uneven: {counts:?}");
        }
    }

    #[test]
    fn one_more_shard_moves_only_its_share_of_stacks() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("stack-{i}")).collect();
        let moved = keys
            .iter()
            .filter(|k| of_stack("apps", k, 4) != of_stack("apps", k, 5))
            .count();
        // About 1/5 move, all of them to the new shard.
        assert!((1_700..=2_300).contains(&moved), "moved {moved}");
        for key in &keys {
            let (before, after) = (of_stack("apps", key, 4), of_stack("apps", key, 5));
            assert!(before == after || after == 4);
        }
    }

    #[test]
    fn one_shard_holds_everything() {
        assert_eq!(of_stack("apps", "shop", 1), 0);
        assert_eq!(of_repository("apps", 1), 0);
        assert_eq!(of_stack("apps", "shop", 0), 0);
    }

    #[test]
    fn the_fair_share_rounds_up() {
        assert_eq!(fair_share(6, 3), 2);
        assert_eq!(fair_share(4, 3), 2);
        assert_eq!(fair_share(3, 2), 2);
        assert_eq!(fair_share(3, 0), 3);
        assert_eq!(fair_share(2, 5), 1);
    }
}
