// Package rules is Cohort's rule language: YAML documents of segments,
// campaigns and policies (strictly decoded, every error with file:line:col),
// `when` expressions type-checked by expr against the sources' schema and
// compiled into typed closures over a Table's columns (with expr's VM for
// what the closures do not cover), the function library, fixtures and
// explain. README.md describes the format, the semantics (missing values,
// windows, time), how rules run, and how to run the fuzz targets:
//
//	go test ./rules -run '^$' -fuzz FuzzLoadYAML -fuzztime 60s
//	go test ./rules -run '^$' -fuzz FuzzCompile -fuzztime 60s
package rules
