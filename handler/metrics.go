package handler

// CountResults counts the response's objects by result, for the
// invocation's metrics record (invoke.ResultCounter).
func (r *Response) CountResults() map[string]int {
	n := make(map[string]int, 3)
	for _, o := range r.Objects {
		n[string(o.Result)]++
	}
	return n
}
