// Placed first on the include path of the sans-I/O tests: including Asio from
// kincir/rabbitmq/amqp/ must fail to compile.
#error "kincir/rabbitmq/amqp/ must not include Asio"
