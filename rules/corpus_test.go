package rules

import (
	"fmt"
	"strings"
)

// corpus is the rules of the differential tests: every operator, every
// function, missing values, unicode, lists, constants and subtrees only
// expr's VM evaluates.
var corpus = []string{
	// numbers and comparisons
	`age > 30`, `age >= 30`, `age < 30`, `age <= 30`, `age == 30`, `age != 30`,
	`30 < age`, `30 == age`, `30 != age`, `30 >= age`,
	`age > 30.5`, `ltv >= 100.25`, `ltv < -0.25`, `age in [18, 21, 30.0]`, `age not in [18, 21]`, `age in 18..30`,
	`age >= 25 && age <= 34`, `age > 20 && age > 30 && age < 50`, `age >= 25 and age <= 34 and ltv > 10`,
	`age + ltv > 100`, `age * 2 - 10 > 50`, `ltv / orders > 10`, `ltv / age < 1`, `-age < -30`, `+age > 30`,
	`age ** 2 > 900`, `age ^ 2 > 900`, `(age ?? 0) > 10`, `(age ?? ltv ?? 5) > 10`, `(ltv ?? 0) + (orders ?? 0) > 50`,
	`orders == 0`, `orders >= 1e300`, `age > 1 + 2`, `age > 10 * 3 - 1`, `age > -(-30)`, `ltv > 7 / 2`,
	`int(age) % 7 == 0`, `abs(ltv - 500) < 100`, `max(age, orders) > 40`, `round(ltv) == 100`, `floor(ltv / 10) > 5`,
	`len(interests) + 1 > 2`, `len(interests) >= 2`, `len(tags) == 0`, `2 < len(interests)`,
	`!(age > 30)`, `not (age > 30)`, `has(age) && !(age > 30)`, `!has(age)`, `has(ltv) || has(orders)`,
	`age > 30 ? ltv > 100 : ltv > 10`, `(age > 30 ? ltv : orders) > 50`, `(vip ? ltv : 0) > 100`, `(has(age) ? age : 99) > 50`,
	`age == ltv`, `age < orders`, `age != orders`, `ltv / 0 > 1`, `ltv - ltv == 0`, `(ltv * 0) / 0 != 1`,
	// strings
	`country == "DE"`, `country != "DE"`, `country < "DE"`, `"DE" <= country`, `country > "C"`, `country >= ""`, `country == ""`,
	`country in ["DE", "AT", "CH"]`, `country not in ["DE", "AT"]`, `country in ["DE", 1]`,
	`city == "München"`, `city == "東京"`, `city startsWith "B"`, `city endsWith "n"`, `city contains "ü"`,
	`city matches "^[A-Z]"`, `city matches "(?i)berlin"`, `first_name matches "^\\p{Lu}"`, `city == "\u00e9\u0301"`,
	`"Berlin" == city`, `"Berliner" contains city`, `"x" + country == "xDE"`, `lower(city) == "berlin"`,
	`upper(country) in ["DE"]`, `len(first_name) > 3`, `trim(first_name) == ""`, `country == city`, `country + city startsWith "DE"`,
	`not (city startsWith "B")`, `city not contains "e"`, `device in ["ios", "android"]`, `app_version >= "5.0"`,
	`(city ?? "none") == "none"`, `first_name == "Zoë" || first_name == "李"`,
	// bools
	`vip`, `!vip`, `vip == true`, `vip != true`, `vip == false`, `true == vip`, `vip && email_opt_in`, `vip || email_opt_in`,
	`!vip && !email_opt_in`, `vip == email_opt_in`, `has(vip) && !vip`, `vip ?? false`, `vip != (age > 30)`,
	// times
	`days_since(signed_up_at) <= 14`, `days_since(signed_up_at) > 365`, `days_since(birthday) > 10000`, `days_since(signed_up_at) == 0`,
	`signed_up_at > date("2025-01-01")`, `signed_up_at >= date("2025-06-01 12:00:00")`, `signed_up_at == date("2025-06-01")`,
	`signed_up_at != date("2026-01-01")`, `date("2025-01-01") < signed_up_at`, `signed_up_at <= date("2025-06-01 00:00:01")`,
	`signed_up_at < birthday`, `signed_up_at > last_time("purchase")`, `signed_up_at == signed_up_at`,
	`signed_up_at + duration("24h") > date("2025-01-01")`, `days_since(date("2026-01-01")) > 300`,
	`days_since(signed_up_at) * 2 > 100`, `days_since(signed_up_at) > 30.000000000000004`, `days_since(signed_up_at) < 29.9999`,
	// events
	`ever("purchase")`, `!ever("email_open")`, `events("purchase", "90d") >= 2`, `events("page_view", "2w") > 3`,
	`events("purchase", "1d") == 0`, `events("purchase", "90d") != 1`, `total("purchase", "90d") > 100`, `total("purchase", "365d") >= 0.1`,
	`total("page_view", "30d") == 0`, `days_since(last_time("purchase")) > 90`, `days_since(first_time("purchase")) < 400`,
	`ever("purchase") && days_since(last_time("purchase")) > 90`, `days_since(last_time("purchase")) < 0`,
	`last_time("purchase") > first_time("purchase")`, `last_time("page_view") == first_time("page_view")`,
	`events("purchase", "90d") + events("page_view", "90d") > 5`, `total("purchase", "30d") / events("purchase", "30d") > 20`,
	`events("purchase", "90d") in [1, 2]`, `!(days_since(last_time("email_open")) <= 7)`, `last_time("purchase") >= date("2026-09-01")`,
	`events("email_open", "65535d") > 0`, `total("purchase", "90d") == 0.6`,
	// rfm
	`rfm.r >= 4 && rfm.f >= 4 && rfm.m >= 4`, `rfm.r == 1`, `has(rfm.r)`, `!(rfm.m > 2)`, `rfm.r + rfm.f > 6`, `rfm.m in [3, 5]`,
	// lists
	`"running" in interests`, `"café" in interests`, `"running" not in interests`,
	`"sports" in interests && ("outdoor" in interests || "travel" in interests)`, `country in tags`, `"" in tags`,
	`any(interests, # startsWith "c")`, `all(interests, # != "yoga")`, `none(interests, # == "books")`,
	`count(interests, # == "travel") >= 1`, `len(interests) == 0 && has(interests)`, `filter(interests, # != "yoga") == interests`,
	`len(map(interests, # + country)) > 1`, `any(interests, # == city)`, `join(interests, ",") contains "run"`,
	`"ünï" in tags`, `"x" in ["x", "y"] && "running" in interests`,
	// logic and constants
	`(age > 30 || country == "DE") && !(vip || plan == "free")`, `age > 30 || country == "DE" || "yoga" in interests || ever("purchase")`,
	`true`, `false`, `!true || age > 3`, `1 < 2 && age > 3`, `true ? age > 3 : false`, `false || !false && plan == "pro"`,
	`!(!(age > 30))`, `(age > 30) == (ltv > 100)`, `age > 30 && (lower(city) == "berlin" || ltv > 500) && !vip`,
	`(plan == "pro" ? "yes" : "no") == "yes"`, `age > 30 ? plan in ["pro", "enterprise"] : ever("purchase")`,
}

// corpusSegments are named segments for in_segment, nested three deep.
var corpusSegments = [][2]string{
	{"adults", `age >= 18`},
	{"adult_buyers", `in_segment("adults") && ever("purchase")`},
	{"rich_adult_buyers", `in_segment("adult_buyers") && total("purchase", "365d") > 200 || in_segment("adults") && vip`},
	{"not_adult_buyers", `!in_segment("adult_buyers")`},
}

// corpusDoc is the corpus as a rules document.
func corpusDoc() []byte {
	var b strings.Builder
	b.WriteString("version: 1\nsegments:\n")
	for _, s := range corpusSegments {
		fmt.Fprintf(&b, "  %s:\n    when: %q\n", s[0], s[1])
	}
	for i, w := range corpus {
		fmt.Fprintf(&b, "  r%03d:\n    when: %q\n", i, w)
	}
	return []byte(b.String())
}
