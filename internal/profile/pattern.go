// Package profile holds the rules for VesselProfiles and Subnets as pure
// functions: which profile a pod matches, and whether a profile or subnet
// an admin writes is valid.
package profile

import "unicode/utf8"

// MatchPattern reports whether s matches pattern, in which "*" stands for
// zero or more characters and "?" for exactly one; every other character,
// including regular-expression syntax, stands for itself. Characters are
// runes, so "?" matches one multi-byte character; if either string is not
// valid UTF-8 they are compared byte by byte, so distinct invalid bytes never
// match each other as they would once both became U+FFFD.
func MatchPattern(pattern, s string) bool {
	if utf8.ValidString(pattern) && utf8.ValidString(s) {
		return match([]rune(pattern), []rune(s))
	}
	return match([]byte(pattern), []byte(s))
}

func match[T rune | byte](p, t []T) bool {
	// Greedy scan that remembers the last "*" and, on a mismatch, lets it
	// swallow one more character. Linear in practice, O(len(p)·len(t)) at
	// worst, with no recursion to blow up on many stars.
	pi, ti := 0, 0
	star, starT := -1, 0
	for ti < len(t) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == t[ti]):
			pi++
			ti++
		case pi < len(p) && p[pi] == '*':
			star, starT = pi, ti
			pi++
		case star >= 0:
			starT++
			pi, ti = star+1, starT
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
