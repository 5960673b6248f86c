"""fnrelay broker: REST API, users and tokens, registries, AMQP routing and result store."""
